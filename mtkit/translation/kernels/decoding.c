/* The two kernels of a decoding step that PyTorch runs slowly at decoding's small sizes.
 *
 * 1) mtk_attention: out = softmax(q k^T * scale) v for a few queries per row.
 * A decoding step asks one query per row (self-attention) or one per beam (cross-attention)
 * against 10-100 cached keys of 32-64 dimensions. PyTorch's attention kernels spend most of
 * such a call on per-(row, head) overhead; this file does each (row, head, query) in one pass
 * over its keys and values, in registers.
 * Shapes (strides in elements, the last dimension contiguous):
 *   q (batch, heads, lq, d), k/v (batch, heads, lk, d), mask (batch, heads, lq, lk) bytes
 *   (0 = may not attend; strides 0 where broadcast) or NULL, out (batch, lq, heads, d)
 *   contiguous: the heads already merged as the output projection reads them.
 * With back-pointers (`rows` not NULL, (batch, lk) int64): key j of batch row b is row
 *   rows[b, j] of k/v (which then have k_rows rows), column j: a beam search's cache whose
 *   rows are never reordered (mtkit/model/cache.py).
 *
 * 2) mtk_log_softmax: the log-softmax over the vocabulary of every row, in place, and the
 * maxima of each row's 64-token chunks, which the searches' argmax and top-k read instead of
 * the whole row. ATen reads a (rows, vocab) matrix three times from memory and the chunk maxima
 * a fourth; this does all in one pass per row while the row is in cache.
 *
 * Plain C with GCC/Clang vector extensions (no intrinsics: it builds for AVX2, AVX-512 or
 * ARM), compiled once per machine (-O3 -march=native) by mtkit/translation/native_kernels.py,
 * which also checks its results against PyTorch before any use.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int64_t i64;
typedef float v8 __attribute__((vector_size(32)));

struct problem {
    const float *q, *k, *v;
    const uint8_t *mask;
    float *out;
    i64 q_stride[3], k_stride[3], v_stride[3], mask_stride[4];
    i64 batch, heads, lq, lk, d;
    float scale;
    const int64_t *rows; /* NULL, or the back-pointers described above */
    i64 rows_stride[2], k_rows;
};

static inline v8 load8(const float *p) { v8 x; memcpy(&x, p, sizeof x); return x; }
static inline void store8(float *p, v8 x) { memcpy(p, &x, sizeof x); }

static inline float sum8(v8 x) {
    v8 y = x + __builtin_shufflevector(x, x, 4, 5, 6, 7, 0, 1, 2, 3);
    y = y + __builtin_shufflevector(y, y, 2, 3, 0, 1, 6, 7, 4, 5);
    y = y + __builtin_shufflevector(y, y, 1, 0, 3, 2, 5, 4, 7, 6);
    return y[0];
}

/* e^x for x <= 0 (scores minus their maximum): Cephes' expf polynomial, ~1 ulp; x < -87 is
 * taken as -87 (e^-87 ~ 1.6e-38, far below a float sum's resolution). Vectorizable. */
static inline float exp_nonpositive(float x) {
    x = x < -87.0f ? -87.0f : x;
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { float f; int32_t i; } two_n;
    two_n.i = ((int32_t)n + 127) << 23;
    return p * two_n.f;
}

/* The softmaxes below work on vectors of the CPU's register width: 16 floats with AVX-512,
 * else 8 (AVX2; ARM takes two registers). Written with vector operations throughout, since GCC
 * vectorizes a scalar loop over a wider vector's lanes only where one register holds them all:
 * with 16-lane vectors on AVX2 it emitted scalar code, and the vocabulary's log-softmax ran 2.6x
 * slower than PyTorch's instead of 2.2x faster. Every width sums the same 16 partial sums. */
#if defined(__AVX512F__)
#define LANES 16
#else
#define LANES 8
#endif
typedef float vf __attribute__((vector_size(LANES * 4)));
typedef int32_t vi __attribute__((vector_size(LANES * 4)));
#define PARTS (16 / LANES) /* vectors holding the 16 partial sums */

static inline vf loadv(const float *p) { vf x; memcpy(&x, p, sizeof x); return x; }
static inline void storev(float *p, vf x) { memcpy(p, &x, sizeof x); }
static inline vf splat(float a) { return (vf){0} + a; }
static inline vf maxv(vf a, vf b) {
    vi a_wins = a > b;
    return (vf)(((vi)a & a_wins) | ((vi)b & ~a_wins));
}

static inline float hmaxv(vf x) {
    float top = x[0];
    for (int i = 1; i < LANES; i++) top = x[i] > top ? x[i] : top;
    return top;
}

/* exp_nonpositive, lane by lane. */
static inline vf expv_nonpositive(vf x) {
    vi below = x < splat(-87.0f); /* not maxv: a NaN must stay NaN (the row becomes NaN) */
    x = (vf)(((vi)splat(-87.0f) & below) | ((vi)x & ~below));
    vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    vf r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    vf p = r * 1.9875691500e-4f + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    vi two_n = (__builtin_convertvector(n, vi) + 127) << 23;
    return p * (vf)two_n;
}

static inline float dot(const float *a, const float *b, const i64 d) {
    v8 acc = {0};
    for (i64 i = 0; i < d; i += 8) acc += load8(a + i) * load8(b + i);
    return sum8(acc);
}

/* Where key (or value) j of a row starts: column j of the row itself, or of row from[j]. */
struct keys {
    const float *base; /* row 0 (back-pointers) or the row itself, this head */
    i64 row, column;   /* strides */
    const int64_t *from;
    i64 from_stride;
};

static inline const float *key_at(const struct keys *x, i64 j) {
    const float *at = x->base + j * x->column;
    return x->from ? at + x->from[j * x->from_stride] * x->row : at;
}

/* One query: scores into s (lk floats), their softmax, the weighted sum of values into o.
 * d is a multiple of 8; inlined with d = 32 or 64 so that the loops unroll. */
static inline void one_query(const float *q, const struct keys *k, const struct keys *v,
                             const uint8_t *mask, i64 mask_col, float *o, i64 lk,
                             const i64 d, float scale, float *s) {
    i64 lo = 0, hi = lk; /* columns outside the first..last unmasked one get no weight: */
    while (mask && lo < hi && !mask[lo * mask_col]) lo++; /* skipped (a sentence that joined */
    while (mask && hi > lo && !mask[(hi - 1) * mask_col]) hi--; /* late; source padding) */
    float top = -INFINITY;
    for (i64 j = lo; j < hi; j++) {
        float x = (mask && !mask[j * mask_col]) ? -INFINITY : dot(q, key_at(k, j), d) * scale;
        s[j] = x;
        top = x > top ? x : top;
    }
    if (top == -INFINITY) { /* nothing to attend to: zeros (mtkit never asks this) */
        memset(o, 0, (size_t)d * sizeof *o);
        return;
    }
    i64 j = lo;
    for (; j + LANES <= hi; j += LANES) { /* masked keys (-inf) get weight 0 */
        vf x = loadv(s + j);
        vi masked = x == splat(-INFINITY);
        storev(s + j, (vf)((vi)expv_nonpositive(x - top) & ~masked));
    }
    for (; j < hi; j++) {
        float e = exp_nonpositive(s[j] - top);
        s[j] = s[j] == -INFINITY ? 0.0f : e;
    }
    float total = 0.0f;
    for (i64 j = lo; j < hi; j++) total += s[j];
    float inv = 1.0f / total;
    for (i64 c = 0; c < d; c += 32) { /* 32 output dimensions at a time, in registers */
        v8 o0 = {0}, o1 = {0}, o2 = {0}, o3 = {0};
        for (i64 j = lo; j < hi; j++) {
            const float *vj = key_at(v, j) + c;
            float w = s[j];
            v8 e = {w, w, w, w, w, w, w, w};
            o0 += e * load8(vj);
            if (d - c > 8) o1 += e * load8(vj + 8);
            if (d - c > 16) o2 += e * load8(vj + 16);
            if (d - c > 24) o3 += e * load8(vj + 24);
        }
        store8(o + c, o0 * inv);
        if (d - c > 8) store8(o + c + 8, o1 * inv);
        if (d - c > 16) store8(o + c + 16, o2 * inv);
        if (d - c > 24) store8(o + c + 24, o3 * inv);
    }
}

/* Whether every back-pointer names a row of k/v (a wrong one would read outside them). */
static int rows_valid(const struct problem *p) {
    for (i64 b = 0; b < p->batch; b++)
        for (i64 j = 0; j < p->lk; j++) {
            int64_t r = p->rows[b * p->rows_stride[0] + j * p->rows_stride[1]];
            if (r < 0 || r >= p->k_rows) return 0;
        }
    return 1;
}

/* Returns 0; -1 when d is not a multiple of 8 or scratch memory ran out; -2 for a back-pointer
 * outside k/v. One thread: split over threads, the kernel ran slower than PyTorch's attention at
 * two threads on a 2-vCPU VM (the threads wait for cores that PyTorch's OpenMP workers hold
 * between operations). */
int mtk_attention(const struct problem *p) {
    if (p->d % 8 != 0) return -1;
    if (p->rows && !rows_valid(p)) return -2;
    float *s = malloc((size_t)(p->lk > 0 ? p->lk : 1) * sizeof *s);
    if (!s) return -1;
    for (i64 b = 0; b < p->batch; b++)
        for (i64 h = 0; h < p->heads; h++)
            for (i64 t = 0; t < p->lq; t++) {
                const float *q = p->q + b * p->q_stride[0] + h * p->q_stride[1] + t * p->q_stride[2];
                const int64_t *from = p->rows ? p->rows + b * p->rows_stride[0] : NULL;
                i64 own = from ? 0 : b; /* with back-pointers the row comes from `from` */
                struct keys k = {p->k + own * p->k_stride[0] + h * p->k_stride[1],
                                 p->k_stride[0], p->k_stride[2], from, p->rows_stride[1]};
                struct keys v = {p->v + own * p->v_stride[0] + h * p->v_stride[1],
                                 p->v_stride[0], p->v_stride[2], from, p->rows_stride[1]};
                const uint8_t *m = p->mask ? p->mask + b * p->mask_stride[0]
                                             + h * p->mask_stride[1] + t * p->mask_stride[2] : NULL;
                float *o = p->out + ((b * p->lq + t) * p->heads + h) * p->d;
                i64 mc = p->mask_stride[3];
                if (p->d == 32)
                    one_query(q, &k, &v, m, mc, o, p->lk, 32, p->scale, s);
                else if (p->d == 64)
                    one_query(q, &k, &v, m, mc, o, p->lk, 64, p->scale, s);
                else
                    one_query(q, &k, &v, m, mc, o, p->lk, p->d, p->scale, s);
            }
    free(s);
    return 0;
}

/* The maximum of x[0..n), n > 0: vectorized when n is a multiple of 16. */
static inline float chunk_max(const float *x, i64 n) {
    float top = -INFINITY;
    if (n % 16 == 0) {
        vf m[PARTS];
        for (int k = 0; k < PARTS; k++) m[k] = loadv(x + k * LANES);
        for (i64 i = 16; i < n; i += 16)
            for (int k = 0; k < PARTS; k++) m[k] = maxv(loadv(x + i + k * LANES), m[k]);
        for (int k = 1; k < PARTS; k++) m[0] = maxv(m[0], m[k]);
        return hmaxv(m[0]);
    }
    for (i64 i = 0; i < n; i++) top = x[i] > top ? x[i] : top;
    return top;
}

/* Row r of x (rows, vocab; rows `stride` floats apart, the vocabulary contiguous) becomes
 * (x - max) - log(sum(exp(x - max))), as PyTorch's log_softmax computes it (the sum may differ
 * in the last bits), and maxima (rows, ceil(vocab / chunk)) the maximum of each chunk of the
 * result: exactly, since subtracting one row's constants is monotone. A row with NaN becomes
 * NaN, as in PyTorch. Returns 0. */
int mtk_log_softmax(float *x, i64 rows, i64 vocab, i64 stride, i64 chunk, float *maxima) {
    const i64 chunks = (vocab + chunk - 1) / chunk;
    for (i64 r = 0; r < rows; r++) {
        float *row = x + r * stride, *m = maxima + r * chunks, top = -INFINITY;
        for (i64 c = 0; c < chunks; c++) {
            i64 n = vocab - c * chunk < chunk ? vocab - c * chunk : chunk;
            m[c] = chunk_max(row + c * chunk, n);
            top = m[c] > top ? m[c] : top;
        }
        vf acc[PARTS] = {{0}}; /* 16 partial sums: lane i of part k sums elements j + k * LANES + i */
        i64 j = 0;
        for (; j + 16 <= vocab; j += 16)
            for (int k = 0; k < PARTS; k++)
                acc[k] += expv_nonpositive(loadv(row + j + k * LANES) - top);
        float total = 0.0f;
        for (int k = 0; k < PARTS; k++)
            for (int i = 0; i < LANES; i++) total += acc[k][i];
        for (; j < vocab; j++) total += exp_nonpositive(row[j] - top);
        float lse = logf(total);
        for (j = 0; j + LANES <= vocab; j += LANES) storev(row + j, (loadv(row + j) - top) - lse);
        for (; j < vocab; j++) row[j] = (row[j] - top) - lse;
        for (i64 c = 0; c < chunks; c++) m[c] = (m[c] - top) - lse;
    }
    return 0;
}
