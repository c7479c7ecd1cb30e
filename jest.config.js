/** Tests are TypeScript run through ts-jest against lib/ (type-checking runs separately: npm run typecheck). */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }] },
  testTimeout: 120000,
  maxWorkers: 2,
  globalSetup: '<rootDir>/test/helpers/global-setup.js',
};
