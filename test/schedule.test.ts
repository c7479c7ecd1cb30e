import { makeSchedule } from '../lib/schedule';

describe('learning-rate schedules', () => {
  test('constant with warmup ramps linearly then holds', () => {
    const s = makeSchedule({ lr: 1, warmupSteps: 3 });
    expect([0, 1, 2, 3, 10].map(s)).toEqual([0.25, 0.5, 0.75, 1, 1]);
  });
  test('linear decays to minLr at totalSteps and stays there', () => {
    const s = makeSchedule({ lr: 1, kind: 'linear', totalSteps: 10, minLr: 0.1 });
    expect(s(0)).toBeCloseTo(1, 12);
    expect(s(5)).toBeCloseTo(0.55, 12);
    expect(s(10)).toBeCloseTo(0.1, 12);
    expect(s(20)).toBeCloseTo(0.1, 12);
  });
  test('cosine after warmup: peak, half-way mean, floor', () => {
    const s = makeSchedule({ lr: 2, kind: 'cosine', warmupSteps: 2, totalSteps: 12 });
    expect(s(2)).toBeCloseTo(2, 12);
    expect(s(7)).toBeCloseTo(1, 12);
    expect(s(12)).toBeCloseTo(0, 12);
  });
  test('bad options throw coded errors', () => {
    expect(() => makeSchedule({ lr: -1 })).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
    expect(() => makeSchedule({ lr: 1, kind: 'cosine' })).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
    expect(() => makeSchedule({ lr: 1, kind: 'linear', totalSteps: 3, warmupSteps: 3 })).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
    expect(() => makeSchedule({ lr: 1 })(-1)).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
  });
});
