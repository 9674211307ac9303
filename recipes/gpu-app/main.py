"""The reference GPU image's app: a sum on the CPU with numpy, and the same on the GPU with CuPy
when a GPU and its driver are present."""

import numpy as np

values = np.arange(12, dtype=np.float64)
print(f"cpu sum: {values.sum()}")
try:
    import cupy as cp

    gpu = cp.asarray(values)
    product = gpu.reshape(3, 4) @ gpu.reshape(4, 3)  # cuBLAS
    print(f"gpu sum: {float(gpu.sum())}, matmul trace: {float(cp.trace(product))} "
          f"on {cp.cuda.runtime.getDeviceProperties(0)['name'].decode()}")
except Exception as error:  # no GPU or no driver: say so, do not fail
    print(f"gpu unavailable: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
