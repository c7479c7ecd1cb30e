export { AdamW, SGD, gradNorm, clipScale, isNorm } from './optim';
export type { AdamWOptions, SGDOptions, StepOptions, LearningRate } from './optim';
export { FoTrainer } from './trainer';
export type { FoTrainerOptions, StepResult } from './trainer';
export { fisher } from './fisher';
export type { FisherOptions, CalibrationBatch } from './fisher';
export { pretrain, randomInit, streamLoss } from './pretrain';
export type { PretrainOptions, PretrainResult, Checkpoint, RandomInitOptions } from './pretrain';
