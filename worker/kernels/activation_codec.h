#ifndef EPINFER_WORKER_KERNELS_ACTIVATION_CODEC_H_
#define EPINFER_WORKER_KERNELS_ACTIVATION_CODEC_H_

// Row codecs for activations on the wire: expert-parallel dispatch sends FP8, combine sends BF16
// (worker/model/moe.cc). Vectorised for ActiveSimd() and bit-identical on every level to the
// scalar conversions of dtype.h (F32ToF8E4M3, F8E4M3ToF32, F32ToBf16, Bf16ToF32), so the level a
// rank runs never changes what its peers decode. Encoded rows need no alignment.

#include <cstdint>

namespace epinfer {

// An FP8 row of n channels: ceil(n / 128) f32 scales, then n E4M3 bytes. Each 128-channel group
// (the last may be shorter) has scale = amax / 448 (1 if the group is all zero; NaNs do not count
// towards amax) and bytes F32ToF8E4M3(x * (1 / scale)): DeepSeek-V3's per-token, per-128-channel
// activation quantization.
int64_t Fp8RowBytes(int64_t n);
void EncodeFp8Row(const float* x, int64_t n, uint8_t* out);
// x[i] = F8E4M3ToF32(byte) * scale.
void DecodeFp8Row(const uint8_t* in, int64_t n, float* x);
// x[i] += F8E4M3ToF32(byte) * scale, rounded after the product and after the sum (no FMA).
void DecodeAddFp8Row(const uint8_t* in, int64_t n, float* x);

// A BF16 row: n little-endian F32ToBf16 values (2n bytes).
void EncodeBf16Row(const float* x, int64_t n, uint8_t* out);
void DecodeBf16Row(const uint8_t* in, int64_t n, float* x);
void DecodeAddBf16Row(const uint8_t* in, int64_t n, float* x);

}  // namespace epinfer

#endif  // EPINFER_WORKER_KERNELS_ACTIVATION_CODEC_H_
