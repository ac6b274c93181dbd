"""Give Triton a real scratch-memory allocator in every Python process of the engine.

Triton kernels that need global scratch memory (used by the Qwen3-Next / Qwen3.5 MoE paths) call
the allocator set with `triton.set_allocator`; unset, Triton's `NullAllocator` raises. vLLM does
not set one, and setting it with `triton.set_allocator` in one place would not reach the worker
processes and threads that run the kernels. So the default allocator class itself is made to
allocate: a byte tensor on the current CUDA device, which Triton keeps alive for the launch (the
contract in Triton's own documentation of set_allocator). Loaded from a .pth file at interpreter
start; torch is imported only when a kernel first asks for memory.
"""

try:
    from triton.runtime import _allocation
except Exception:  # no Triton (or a layout without NullAllocator): nothing to fix
    _allocation = None


def _allocate(size, alignment, stream):
    import torch

    return torch.empty(size, dtype=torch.uint8, device="cuda")


if _allocation is not None and hasattr(_allocation, "NullAllocator"):
    _allocation.NullAllocator.__call__ = staticmethod(_allocate)
