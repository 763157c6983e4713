// Sample CUDA kernel bundled with perfbox: out[i] = a[i] + b[i], with a shared-memory stage
// so the compile report shows shared memory and the disassembly shows LDS/STS.
#include <cuda_runtime.h>

constexpr int kBlock = 256;

__global__ void vector_add(const float* __restrict__ a, const float* __restrict__ b,
                           float* __restrict__ out, int n) {
  __shared__ float tile[kBlock];
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  tile[threadIdx.x] = i < n ? a[i] : 0.0f;
  __syncthreads();
  if (i < n) out[i] = tile[threadIdx.x] + b[i];
}
