/** Stable error codes: every error zotune throws carries one as `err.code`. */
export type ErrorCode =
  | 'ZOTUNE_INVALID_ARGUMENT'
  | 'ZOTUNE_SHAPE_MISMATCH'
  | 'ZOTUNE_DTYPE'
  | 'ZOTUNE_OUT_OF_RANGE'
  | 'ZOTUNE_OOM'
  | 'ZOTUNE_NONFINITE'
  | 'ZOTUNE_DISPOSED'
  | 'ZOTUNE_UNSUPPORTED'
  | 'ZOTUNE_NO_BINARY'
  | 'ZOTUNE_BAD_FILE'
  | 'ZOTUNE_IO'
  | 'ZOTUNE_BUSY'
  | 'ZOTUNE_INTERNAL'
  | 'ZOTUNE_CUDA_UNAVAILABLE'
  | 'ZOTUNE_CUDA_ERROR';

export class ZotuneError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ZotuneError';
    this.code = code;
  }
}

export function fail(code: ErrorCode, message: string): never {
  throw new ZotuneError(code, message);
}
