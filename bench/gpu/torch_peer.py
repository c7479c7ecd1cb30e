"""The PyTorch peer of the GPU benchmarks: torch with a CUDA device, or None after printing why as
the one JSON line {"error": ...} that the Node side reports in place of torch's numbers."""
import json


def cuda_torch():
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - any import failure means "no peer"
        print(json.dumps({"error": f"torch unavailable: {e}"}))
        return None
    if not torch.cuda.is_available():
        print(json.dumps({"error": f"torch {torch.__version__} sees no CUDA device"}))
        return None
    return torch
