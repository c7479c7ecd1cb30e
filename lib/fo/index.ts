export { AdamW, SGD, gradNorm, clipScale, isNorm } from './optim';
export type { AdamWOptions, SGDOptions, StepOptions, LearningRate } from './optim';
export { FoTrainer } from './trainer';
export type { FoTrainerOptions, StepResult } from './trainer';
