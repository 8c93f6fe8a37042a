"""Exact inner-product top-k on a CUDA device with torch: the GPU path without faiss-gpu.

faiss-gpu wheels need the CUDA 12 runtime; a CUDA 13 machine with faiss-cpu and a CUDA
build of torch can still move the weekly job's bulk search (millions of queries against
a million anchors) to the GPU: one matmul and one ``topk`` per block of queries, exact,
so recall is 1.0 by construction. The block size is chosen from free device memory so the
(queries x anchors) score block fits. Same ``search(queries, k)`` signature as a faiss
index; results come back as numpy on the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# share of free device memory one score block may take (the rest: anchors, top-k buffers)
_BLOCK_MEMORY_SHARE = 0.25
_MAX_BLOCK_BYTES = 8 << 30
_CPU_BLOCK_BYTES = 256 << 20


class TorchExactIndex:
    """Anchors resident on the GPU; exact top-k by inner product (cosine for unit vectors)."""

    def __init__(self, anchors: np.ndarray, device: str = "cuda") -> None:
        import torch

        self._torch: Any = torch
        self.device = torch.device(device)
        self.anchors = torch.from_numpy(np.ascontiguousarray(anchors, dtype=np.float32)).to(self.device)
        self.ntotal, self.d = (int(x) for x in anchors.shape)

    def _block_rows(self) -> int:
        if self.device.type == "cuda":
            free, _ = self._torch.cuda.mem_get_info(self.device)
            budget = min(int(free * _BLOCK_MEMORY_SHARE), _MAX_BLOCK_BYTES)
        else:  # CPU: tests and parity checks
            budget = _CPU_BLOCK_BYTES
        return max(1, budget // max(1, 4 * self.ntotal))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        n = int(queries.shape[0])
        k_eff = min(k, self.ntotal)
        sims = np.full((n, k), -np.inf, dtype=np.float32)
        ids = np.full((n, k), -1, dtype=np.int64)
        block = self._block_rows()
        with torch.inference_mode():
            for start in range(0, n, block):
                stop = min(n, start + block)
                q = torch.from_numpy(np.ascontiguousarray(queries[start:stop], dtype=np.float32)).to(self.device)
                top = torch.topk(q @ self.anchors.T, k_eff, dim=1)
                sims[start:stop, :k_eff] = top.values.cpu().numpy()
                ids[start:stop, :k_eff] = top.indices.cpu().numpy()
        return sims, ids
