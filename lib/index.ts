export { ZotuneError } from './errors';
export type { ErrorCode } from './errors';
export type { DType } from './dtype';
export { Tensor } from './tensor';
export type { MemoryCategory } from './tensor';
export * as rng from './rng';
export { perturb, perturbSync, perturbIndices, perturbIndicesSync } from './perturb';
export type { DirectionOptions } from './perturb';
export * as ceilings from './ceilings';
export { cpuInfo, setCpuPath, setThreads, memory, resetMemoryPeaks } from './runtime';
export type { CpuPath, MemoryUsage } from './runtime';
export { QTensor, QFORMAT_CODE } from './qtensor';
export type { QFormat, Granularity } from './qtensor';
export { SafetensorsFile, ModelWeights, writeSafetensors } from './io/safetensors';
export type { SafetensorsDType, TensorInfo, TensorEntry } from './io/safetensors';
export { selectBackend, cudaStatus } from './backend';
export type { Backend, BackendPreference, BackendChoice, CudaStatus } from './backend';
export * as quant from './quant';
export type { Rounding, RoundingOptions, QuantizeOptions, FloatFormat, QuantDirection } from './quant';
export { matmul, matmulSync } from './gemm';
export type { MatmulOptions, MatmulPerturb } from './gemm';
export { matmulInt8, matmulInt8Sync, gemmS8S8S32, gemmS8S8S32Sync } from './gemm-int8';
export type { MatmulInt8Options, PerturbOnLoad } from './gemm-int8';
export * as nn from './nn';
export { parseLlamaConfig, loadLlamaConfig, parseGenerationConfig, loadGenerationConfig, SUPPORTED_ARCHITECTURES } from './model/config';
export type { LlamaConfig, Llama3RopeScaling, GenerationConfig } from './model/config';
export { LlamaTokenizer } from './model/tokenizer';
export { LlamaModel, KVCache, llamaTensorNames, matchesTensor, schemeStorage, WEIGHT_SCHEMES } from './model/llama';
export type {
  LoadOptions, WeightScheme, ForwardOptions, ForwardResult, GenerateOptions, Sequence, ZoDirection, ZoProbeOptions, ZoUpdateOptions,
  TrainableInfo, TensorPattern,
} from './model/llama';
export { lossAndGrad } from './model/grad';
export type { GradOptions, LossAndGrad } from './model/grad';
export * as fo from './fo';
export { makeSchedule } from './schedule';
export type { ScheduleOptions, ScheduleKind } from './schedule';
