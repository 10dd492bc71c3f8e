/* Fused element-wise kernels of densevision's dense block (rows x channels layout).
 *
 * A dense block keeps its maps x in one (M, C_total) row-major buffer (M = N*H*W, channels innermost:
 * channels-last). Layer l reads the first C_l channels of every row (row stride C_total) and needs
 * relu(gamma * xhat + beta), xhat = (x - mean) * invstd, before its first conv: one pass here instead of
 * ATen's batch_norm + relu_ (and no concatenation). Its backward needs, from dy (the conv's input
 * gradient, M x C_l):
 *   d = dy where gamma * xhat + beta > 0, else 0
 *   dbeta = sum_m d, dgamma = sum_m d * xhat, dxhat += gamma * d
 * in one pass instead of five (threshold_backward, two sums, a product and addcmul_).
 * Inference passes mean 0, invstd 1 and the running statistics folded into gamma and beta, also on
 * bfloat16 maps (autocast). Rows are split across OpenMP threads (torch's own runtime: same soname);
 * per-channel sums accumulate in float over tiles of TILE_ROWS rows, then in double.
 * Built with -ffp-contract=off so forward and backward evaluate the affine identically. The ReLU is
 * written "a <= 0 ? 0 : a" so that NaN propagates as through torch.relu and its threshold_backward.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#define TILE_ROWS 64

/* bfloat16 <-> float32 (bf16 is the top half of a float32; rounding to nearest even; NaN stays NaN) */
static inline float bf16_to_float(uint16_t v) {
    uint32_t bits = (uint32_t)v << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint16_t float_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

void affine_relu_rows(const float *restrict x, int64_t x_stride, int64_t rows, int64_t channels,
                      const float *restrict mean, const float *restrict invstd,
                      const float *restrict gamma, const float *restrict beta, float *restrict out,
                      int64_t out_stride, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t m = 0; m < rows; ++m) {
        const float *restrict xm = x + m * x_stride;
        float *restrict y = out + m * out_stride;
        for (int64_t j = 0; j < channels; ++j) {
            float a = gamma[j] * ((xm[j] - mean[j]) * invstd[j]) + beta[j];
            y[j] = a <= 0.0f ? 0.0f : a; /* NaN stays NaN, as in torch.relu */
        }
    }
}

void affine_relu_rows_bf16(const uint16_t *restrict x, int64_t x_stride, int64_t rows, int64_t channels,
                           const float *restrict mean, const float *restrict invstd,
                           const float *restrict gamma, const float *restrict beta,
                           uint16_t *restrict out, int64_t out_stride, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t m = 0; m < rows; ++m) {
        const uint16_t *restrict xm = x + m * x_stride;
        uint16_t *restrict y = out + m * out_stride;
        for (int64_t j = 0; j < channels; ++j) {
            float a = gamma[j] * ((bf16_to_float(xm[j]) - mean[j]) * invstd[j]) + beta[j];
            y[j] = float_to_bf16(a <= 0.0f ? 0.0f : a);
        }
    }
}

static void backward_rows(const float *restrict dy, int64_t dy_stride, const float *restrict x,
                          int64_t x_stride, float *restrict dxhat, int64_t dxhat_stride, int64_t begin,
                          int64_t end, int64_t channels, const float *restrict mean,
                          const float *restrict invstd, const float *restrict gamma,
                          const float *restrict beta, float *restrict sum_g, float *restrict sum_b) {
    for (int64_t m = begin; m < end; ++m) {
        const float *restrict g = dy + m * dy_stride;
        const float *restrict xm = x + m * x_stride;
        float *restrict dx = dxhat + m * dxhat_stride;
        for (int64_t j = 0; j < channels; ++j) {
            float xhat = (xm[j] - mean[j]) * invstd[j];
            float a = gamma[j] * xhat + beta[j];
            float d = a <= 0.0f ? 0.0f : g[j]; /* as threshold_backward: NaN passes */
            sum_b[j] += d;
            sum_g[j] += d * xhat;
            dx[j] += gamma[j] * d;
        }
    }
}

void affine_relu_rows_backward(const float *restrict dy, int64_t dy_stride, const float *restrict x,
                               int64_t x_stride, int64_t rows, int64_t channels,
                               const float *restrict mean, const float *restrict invstd,
                               const float *restrict gamma, const float *restrict beta,
                               float *restrict dxhat, int64_t dxhat_stride, float *restrict dgamma,
                               float *restrict dbeta, int threads) {
    /* per thread: double totals (2C) then float tile sums (2C) */
    size_t per_thread = 2 * (size_t)channels * (sizeof(double) + sizeof(float));
    char *scratch = calloc((size_t)threads, per_thread);
    int64_t tiles = (rows + TILE_ROWS - 1) / TILE_ROWS;
#pragma omp parallel num_threads(threads)
    {
        char *mine = scratch + (size_t)omp_get_thread_num() * per_thread;
        double *total_g = (double *)mine;
        double *total_b = total_g + channels;
        float *tile_g = (float *)(total_b + channels);
        float *tile_b = tile_g + channels;
#pragma omp for schedule(static)
        for (int64_t tile = 0; tile < tiles; ++tile) {
            int64_t end = (tile + 1) * TILE_ROWS < rows ? (tile + 1) * TILE_ROWS : rows;
            memset(tile_g, 0, 2 * (size_t)channels * sizeof(float));
            backward_rows(dy, dy_stride, x, x_stride, dxhat, dxhat_stride, tile * TILE_ROWS, end,
                          channels, mean, invstd, gamma, beta, tile_g, tile_b);
            for (int64_t j = 0; j < channels; ++j) {
                total_g[j] += tile_g[j];
                total_b[j] += tile_b[j];
            }
        }
    }
    for (int64_t j = 0; j < channels; ++j) {
        double g = 0.0, b = 0.0;
        for (int t = 0; t < threads; ++t) {
            const double *totals = (const double *)(scratch + (size_t)t * per_thread);
            g += totals[j];
            b += totals[channels + j];
        }
        dgamma[j] = (float)g;
        dbeta[j] = (float)b;
    }
    free(scratch);
}
