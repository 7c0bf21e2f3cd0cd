/* 4-bit weight x fp32 activation matrix-vector products for decode steps.
 *
 * Decoding one token multiplies a handful of activation rows by every weight matrix.
 * torch's int4 CPU kernel is built for bigger batches: for one row it spends more time
 * unpacking than reading, and each call pays a dispatcher round trip. This kernel reads
 * each 4-bit weight once, turns it into fp32 in registers and multiplies it with up to
 * Q4_MAX_ROWS activation rows, all rows sharing the load. Activations stay fp32 (no
 * activation quantization, unlike llama.cpp's Q4_1 x Q8_1), so results equal the
 * dequantized-weight product up to fp32 summation order.
 *
 * Layout (chatbot/engine/native.py packs it), for a weight W [n, k], k % 32 == 0:
 *   qs: uint8 [n, k/32, 16]: block b of row j holds elements 32b..32b+31; byte i's low
 *       nibble is element i, its high nibble element i + 16 (GGUF's Q4_1 order).
 *   dm: fp32 [n, 2, k/32]: row j's scales d then its offsets m, W[j, 32b + i] = d_b * q_i + m_b
 *       (fp16 values, as GGUF stores them, widened so they load without conversion).
 * An optional LoRA adapter stays unmerged in fp32 (a small delta would round away in 4
 * bits): a [r, k], b_t [r, n] (B transposed); y += (a @ x) @ b_t.
 *
 * Every output element is computed by one thread in a fixed order that does not depend
 * on how many rows are in the call or on the thread count: a row's result is the same
 * alone or beside drafted rows, and runs are deterministic.
 *
 * Built at run time with the machine's C compiler (-O3 -march=native -fopenmp); the
 * vector paths below are picked by what the compiler targets: AVX-512 (with BF16 or VNNI
 * where present), AVX2 + FMA, or plain C.
 */
#define _GNU_SOURCE
#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#define Q4_BLOCK 32
#define Q4_MAX_ROWS 16

/* ------------------------------------------------------------------------------------
 * The interface. chatbot/engine/native.py mirrors these structs with ctypes.Structure and,
 * when it loads the library, checks q4_abi_version() and q4_struct_size() against its
 * mirrors: bump Q4_ABI_VERSION with any change to a struct or an exported signature.
 * ------------------------------------------------------------------------------------ */
#define Q4_ABI_VERSION 2

/* One weight matrix W [n, k] and its optional unmerged LoRA adapter (rank 0: none). */
typedef struct {
    const void *qs;           /* q4: uint8 [n, k/32, 16] (see above); q8: int8 [n, k] */
    const float *scales;      /* q4: dm [n, 2, k/32]; q8: d [n, k/32] */
    const float *lora_a;      /* [rank, k] */
    const float *lora_b_t;    /* B transposed, scale folded in: [rank, n] */
    const int32_t *lora_span; /* [rank, 2]: the outputs where each row of lora_b_t may be
                                 nonzero; NULL: everywhere */
    int32_t rank, n, k;
} q4_weight_t;

enum { W_QKV, W_O, W_GATE_UP, W_DOWN, W_N };

/* One decoder layer for q4_decode: its norms and its four 4-bit weights. */
typedef struct {
    const float *attn_norm, *mlp_norm; /* [hidden] */
    q4_weight_t w[W_N];                /* qkv, o, gate_up, down (fused as in model.py) */
} q4_layer_t;

/* One decode step for q4_decode: the model (fixed at load) and this step's rows. */
typedef struct {
    int32_t layers, hidden, inter, heads, kv_heads, head_dim, max_positions;
    float eps;
    const q4_layer_t *layer;      /* [layers] */
    const float *cos, *sin;       /* RoPE tables [max_positions, head_dim] */
    int32_t rows, n_slots;        /* this step: rows <= Q4_MAX_ROWS */
    int64_t capacity;             /* the KV cache's positions per slot */
    const int32_t *positions;     /* [rows] */
    const int32_t *slots;         /* [rows] */
    float *x;                     /* [rows, hidden] fp32, updated in place */
    uint16_t *k_cache, *v_cache;  /* bf16 [layers, n_slots, kv_heads, capacity, head_dim] */
} q4_decode_t;

int q4_abi_version(void) { return Q4_ABI_VERSION; }

/* sizeof(q4_weight_t), sizeof(q4_layer_t), sizeof(q4_decode_t) for which = 0, 1, 2. */
long q4_struct_size(int which) {
    switch (which) {
    case 0: return (long)sizeof(q4_weight_t);
    case 1: return (long)sizeof(q4_layer_t);
    case 2: return (long)sizeof(q4_decode_t);
    default: return -1;
    }
}

static inline uint16_t float_to_bf16(float f) {  /* round to nearest even, as torch does */
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffff) > 0x7f800000) return (uint16_t)((bits >> 16) | 0x40);  /* NaN */
    bits += 0x7fff + ((bits >> 16) & 1);
    return (uint16_t)(bits >> 16);
}

static inline float bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

#if defined(__AVX2__)
/* The sum of a vector's 8 lanes, in a fixed order. */
static inline float hsum256(__m256 v) {
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    return _mm_cvtss_f32(s4);
}
#endif

/* BLOCK(b, acc0) and BLOCK(b + 1, acc1) for each pair of the n blocks, then BLOCK(last, acc0)
 * for an odd one: two accumulators, named so they stay in registers, and consecutive
 * blocks do not wait on each other's fused multiply-add. */
#define FOR_BLOCK_PAIRS(n, BLOCK)                       \
    do {                                                \
        int pair_b = 0;                                 \
        for (; pair_b + 1 < (n); pair_b += 2) {         \
            BLOCK(pair_b, acc0);                        \
            BLOCK(pair_b + 1, acc1);                    \
        }                                               \
        if (pair_b < (n)) BLOCK(pair_b, acc0);          \
    } while (0)

/* How many rows one inlined product takes at once: each row holds two accumulators in
 * registers (AVX-512 has 32, AVX2 16), beside the unpacked weights and constants. */
#ifndef Q4_GROUP_ROWS
#if defined(__AVX512F__)
#define Q4_GROUP_ROWS 8
#else
#define Q4_GROUP_ROWS 4
#endif
#endif

/* CASE(1) ... CASE(Q4_GROUP_ROWS): a switch on a group's row count that calls an
 * always-inlined product with the count as a compile-time constant. */
#if Q4_GROUP_ROWS == 4
#define FOR_EACH_GROUP_COUNT(CASE) CASE(1) CASE(2) CASE(3) CASE(4)
#elif Q4_GROUP_ROWS == 8
#define FOR_EACH_GROUP_COUNT(CASE) CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
#else
#error "Q4_GROUP_ROWS must be 4 or 8"
#endif

/* This thread's share [j0, j1) of n items, by OpenMP thread number (a fixed split). */
#define SPLIT(n, j0, j1)                                                 \
    const int j0 = (int)((int64_t)(n) * omp_get_thread_num() / omp_get_num_threads()), \
              j1 = (int)((int64_t)(n) * (omp_get_thread_num() + 1) / omp_get_num_threads())

/* sum of x[0..n) in a fixed order */
static float dot(const float *a, const float *b, int n) {
    int i = 0;
#if defined(__AVX512F__)
    __m512 acc = _mm512_setzero_ps();
    for (; i + 16 <= n; i += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
    float s = _mm512_reduce_add_ps(acc);
#elif defined(__AVX2__) && defined(__FMA__)
    __m256 acc = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    float s = hsum256(acc);
#else
    float s = 0.0f;
#endif
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(Q4_INT8_ACTIVATIONS)
/* AVX512-VNNI, when built with -DQ4_INT8_ACTIVATIONS (CHATBOT_Q4_ACTIVATIONS=int8):
 * activations quantized to int8 per 32-element block (scale = max|x| / 127, as llama.cpp's
 * Q8_1 does; the per-block sums stay exact fp32) so one vpdpbusd multiplies 64 weights by
 * 64 activations: a third of the instructions a block, ~25% faster decode steps on a
 * 2-core AMX box. Off by default: the rounded activations moved the real model's greedy
 * replies away from the reference within eight tokens (tests/integration). */
#define Q4_VNNI 1
#endif

#if !defined(Q4_VNNI) && defined(__AVX512BF16__) && defined(__AVX512BW__)
/* AVX512-BF16 (the default where present): activations rounded to bf16, as torch's own
 * int4 kernel does, so one vdpbf16ps multiplies 32 weights by 32 activations with fp32
 * products and sums. The nibbles become bf16 by OR-ing them into the bits of 128.0
 * (0x4300 | q is exactly 128 + q); the extra 128 * sum(x) is taken off with the block
 * sums of the rounded x. */
#define Q4_BF16 1
#endif

/* Floats of scratch prepare_rows needs for `rows` rows of width k (excluding the LoRA). */
static size_t prep_floats(int rows, int k) {
    const size_t blocks = (size_t)k / Q4_BLOCK;
    size_t n = (size_t)rows * blocks;  /* xsum */
#ifdef Q4_VNNI
    n += (size_t)rows * (blocks / 2 + 1) * 16 + (size_t)rows * k / 4 + 16;  /* dx lanes, int8 x */
#elif defined(Q4_BF16)
    n += (size_t)rows * blocks + (size_t)rows * k / 2 + 16;  /* sums of bf16 x, bf16 x */
#elif defined(__AVX512F__)
    n += (size_t)rows * k;  /* x in the order row_product unpacks the nibbles */
#endif
    return n;
}

/* t[r, i0:i1] = a[i0:i1] @ x[r]: the adapter's first factor, split across threads in a
 * decode step. */
static void lora_a_range(const float *x, int rows, int k, const float *lora_a, int rank, int i0,
                         int i1, float *t) {
    for (int r = 0; r < rows; r++)
        for (int i = i0; i < i1; i++) t[r * rank + i] = dot(lora_a + (size_t)i * k, x + (size_t)r * k, k);
}

/* The per-block sums (xsum, exact), the LoRA's t = a @ x, and with VNNI the int8 codes and
 * their scales, laid out the way row_product reads them (see there). */
static void prepare_rows(const float *x, int rows, int k, const float *lora_a, int rank,
                         float *prep, float *t) {
    const int blocks = k / Q4_BLOCK;
    float *xsum = prep;
#ifdef Q4_VNNI
    float *dxv = prep + (size_t)rows * blocks;
    int8_t *xq = (int8_t *)(dxv + (size_t)rows * (blocks / 2 + 1) * 16);
#elif defined(Q4_BF16)
    float *xsum_bf = prep + (size_t)rows * blocks;
    uint16_t *xbf = (uint16_t *)(xsum_bf + (size_t)rows * blocks);
#elif defined(__AVX512F__)
    float *xp = prep + (size_t)rows * blocks;
#endif
    for (int r = 0; r < rows; r++) {
        for (int b = 0; b < blocks; b++) {
            const float *xb = x + (size_t)r * k + Q4_BLOCK * b;
            float s = 0.0f;
            for (int i = 0; i < Q4_BLOCK; i++) s += xb[i];
            xsum[r * blocks + b] = s;
#if defined(Q4_BF16)
            /* 16-bit lane w = 8c + i of the unpacked nibbles holds element 2i, 2i + 1,
             * 16 + 2i, 17 + 2i for c = 0..3 (see row_product): round to bf16 (to nearest
             * even), put the words in that order, and sum the rounded values */
            const __m512i order = _mm512_set_epi16(
                31, 29, 27, 25, 23, 21, 19, 17, 30, 28, 26, 24, 22, 20, 18, 16,
                15, 13, 11, 9, 7, 5, 3, 1, 14, 12, 10, 8, 6, 4, 2, 0);
            __m512bh rounded = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(xb + 16), _mm512_loadu_ps(xb));
            _mm512_storeu_si512((void *)(xbf + (size_t)r * k + Q4_BLOCK * b),
                                _mm512_permutexvar_epi16(order, (__m512i)rounded));
            const __m512bh ones = (__m512bh)_mm512_set1_epi16(0x3f80);  /* bf16 1.0 */
            xsum_bf[r * blocks + b] =
                _mm512_reduce_add_ps(_mm512_dpbf16_ps(_mm512_setzero_ps(), rounded, ones));
#elif !defined(Q4_VNNI) && defined(__AVX512F__)
            /* lane j of the unpacked low nibbles holds element 4 (j % 4) + j / 4 (see
             * row_product), of the high ones 16 + that */
            float *dst = xp + (size_t)r * k + Q4_BLOCK * b;
            for (int j = 0; j < 16; j++) {
                dst[j] = xb[4 * (j % 4) + j / 4];
                dst[16 + j] = xb[16 + 4 * (j % 4) + j / 4];
            }
#endif
#ifdef Q4_VNNI
            float amax = 0.0f;
            for (int i = 0; i < Q4_BLOCK; i++) amax = fmaxf(amax, fabsf(xb[i]));
            const float dx = amax / 127.0f, inv = amax > 0.0f ? 127.0f / amax : 0.0f;
            const int pair = b / 2, side = b % 2, tail = (b == blocks - 1) && (blocks % 2);
            int8_t *dst = xq + (size_t)r * k + 64 * pair;
            float *lanes = dxv + ((size_t)r * (blocks / 2 + 1) + pair) * 16;
            for (int i = 0; i < Q4_BLOCK; i++) {
                int8_t code = (int8_t)lrintf(xb[i] * inv);
                if (tail) dst[i] = code;                              /* [e0..e31] */
                else dst[(i < 16 ? 0 : 32) + 16 * side + i % 16] = code;  /* [lo b0 b1, hi b0 b1] */
            }
            for (int l = 0; l < 4; l++) {
                if (tail) { lanes[l] = lanes[4 + l] = dx; }
                else { lanes[4 * side + l] = lanes[8 + 4 * side + l] = dx; }
            }
#endif
        }
    }
    lora_a_range(x, rows, k, lora_a, rank, 0, rank, t);
}

/* One output row j for `rows` activation rows: out[r] = W[j] . x[r].
 * Always inlined and called with a constant `rows` (see row_product_n), so the
 * accumulators live in registers; blocks alternate between two accumulators so that
 * consecutive blocks do not wait on each other's fused multiply-add. The offsets
 * (sum_b m_b * xsum[r, b]) are one dot product over the row's m at the end. */
static inline __attribute__((always_inline)) void row_product(
    const uint8_t *q, const float *dm, int blocks, const float *x, const float *xsum,
    const int rows, int k, float *out, int r0, int total) {
    const float *d = dm, *m = dm + blocks;
#ifdef Q4_VNNI
    /* xsum points at prepare_rows' scratch for `total` rows: sums, then dx lanes, then the
     * int8 codes; this call's rows start at row r0 of each */
    const float *dxv = xsum + (size_t)total * blocks + (size_t)r0 * (blocks / 2 + 1) * 16;
    const int8_t *xq = (const int8_t *)(xsum + (size_t)total * blocks +
                                        (size_t)total * (blocks / 2 + 1) * 16) + (size_t)r0 * k;
    xsum += (size_t)r0 * blocks;
    const int pairs = blocks / 2;
    __m512 acc0[Q4_MAX_ROWS], acc1[Q4_MAX_ROWS];
    float tail[Q4_MAX_ROWS];
    for (int r = 0; r < rows; r++) {
        acc0[r] = acc1[r] = _mm512_setzero_ps();
        tail[r] = 0.0f;
    }
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    /* lanes 0-3 and 8-11 hold the first block's sums, 4-7 and 12-15 the second's */
    const __m512i pick_d = _mm512_set_epi32(1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0);
#define Q4_VNNI_PAIR(P, ACC)                                                                   \
    do {                                                                                       \
        __m256i w = _mm256_loadu_si256((const __m256i *)(q + 32 * (P)));                       \
        __m256i lo = _mm256_and_si256(w, low4);                                                \
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), low4);                          \
        __m512i wq = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);                    \
        __m128 dpair = _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)(d + 2 * (P))));      \
        __m512 dv = _mm512_permutexvar_ps(pick_d, _mm512_castps128_ps512(dpair));              \
        for (int r = 0; r < rows; r++) {                                                       \
            __m512i xv = _mm512_loadu_si512((const void *)(xq + (size_t)r * k + 64 * (P)));    \
            __m512i isum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq, xv);                \
            __m512 sc = _mm512_mul_ps(                                                         \
                dv, _mm512_loadu_ps(dxv + ((size_t)r * (blocks / 2 + 1) + (P)) * 16));        \
            ACC[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), sc, ACC[r]);                    \
        }                                                                                      \
    } while (0)
    FOR_BLOCK_PAIRS(pairs, Q4_VNNI_PAIR);
#undef Q4_VNNI_PAIR
    if (blocks % 2) {
        const int b = blocks - 1;
        __m128i w = _mm_loadu_si128((const __m128i *)(q + 16 * b));
        const __m128i low4x = _mm_set1_epi8(0x0f);
        __m256i wq = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_and_si128(w, low4x)),
            _mm_and_si128(_mm_srli_epi16(w, 4), low4x), 1);
        for (int r = 0; r < rows; r++) {
            __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + (size_t)r * k + 64 * pairs));
            __m256i isum = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wq, xv);
            const float dx = dxv[((size_t)r * (blocks / 2 + 1) + pairs) * 16];
            int32_t lanes[8];  /* an exact integer sum, times d * dx */
            _mm256_storeu_si256((__m256i *)lanes, isum);
            int32_t exact = 0;
            for (int l = 0; l < 8; l++) exact += lanes[l];
            tail[r] = (float)exact * (d[b] * dx);
        }
    }
    for (int r = 0; r < rows; r++)
        out[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[r], acc1[r])) +
                 dot(m, xsum + (size_t)r * blocks, blocks) + tail[r];
#elif defined(Q4_BF16)
    const float *xsum_bf = xsum + (size_t)total * blocks + (size_t)r0 * blocks;
    const uint16_t *xbf = (const uint16_t *)(xsum + 2 * (size_t)total * blocks) + (size_t)r0 * k;
    xsum += (size_t)r0 * blocks;
    __m512 acc0[Q4_MAX_ROWS], acc1[Q4_MAX_ROWS];
    for (int r = 0; r < rows; r++) acc0[r] = acc1[r] = _mm512_setzero_ps();
    const __m512i low4 = _mm512_set1_epi16(0x0f), bias = _mm512_set1_epi16(0x4300);
    /* word lanes 0-7 shift by 0, 8-15 by 8, 16-23 by 4, 24-31 by 12 */
    const __m512i shifts = _mm512_set_epi16(12, 12, 12, 12, 12, 12, 12, 12, 4, 4, 4, 4, 4, 4, 4, 4,
                                            8, 8, 8, 8, 8, 8, 8, 8, 0, 0, 0, 0, 0, 0, 0, 0);
#define Q4_BF16_BLOCK(B, ACC)                                                                  \
    do {                                                                                       \
        __m512i w = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(q + 16 * (B))));  \
        __m512i wb = _mm512_or_si512(_mm512_and_si512(_mm512_srlv_epi16(w, shifts), low4), bias); \
        __m512 dv = _mm512_set1_ps(d[B]);                                                      \
        for (int r = 0; r < rows; r++) {                                                       \
            __m512i xv = _mm512_loadu_si512((const void *)(xbf + (size_t)r * k + Q4_BLOCK * (B))); \
            __m512 sum = _mm512_dpbf16_ps(_mm512_setzero_ps(), (__m512bh)wb, (__m512bh)xv);    \
            ACC[r] = _mm512_fmadd_ps(sum, dv, ACC[r]);                                         \
        }                                                                                      \
    } while (0)
    FOR_BLOCK_PAIRS(blocks, Q4_BF16_BLOCK);
#undef Q4_BF16_BLOCK
    for (int r = 0; r < rows; r++)
        out[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[r], acc1[r])) +
                 dot(m, xsum + (size_t)r * blocks, blocks) -
                 128.0f * dot(d, xsum_bf + (size_t)r * blocks, blocks);
#elif defined(__AVX512F__)
    /* The 16 bytes of a block are broadcast to all four 128-bit lanes (a load, no shuffle)
     * and each 32-bit lane shifts its own nibble down: lane j takes byte j / 4 of dword
     * j % 4, so the low nibbles come out as elements 4 (j % 4) + j / 4 and the high ones
     * 16 more; prepare_rows lays x out in that order. No port-5 shuffles, which were
     * this loop's bottleneck with one vpmovzxbd per 16 nibbles. */
    const float *xp = xsum + (size_t)total * blocks + (size_t)r0 * k;
    xsum += (size_t)r0 * blocks;
    __m512 acc0[Q4_MAX_ROWS], acc1[Q4_MAX_ROWS];
    for (int r = 0; r < rows; r++) acc0[r] = acc1[r] = _mm512_setzero_ps();
    const __m512i low4 = _mm512_set1_epi32(0x0f);
    const __m512i shift_lo = _mm512_set_epi32(24, 24, 24, 24, 16, 16, 16, 16, 8, 8, 8, 8, 0, 0, 0, 0);
    const __m512i shift_hi = _mm512_add_epi32(shift_lo, _mm512_set1_epi32(4));
#define Q4_F32_BLOCK(B, ACC)                                                                    \
    do {                                                                                        \
        __m512i w = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(q + 16 * (B))));  \
        __m512 lo = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srlv_epi32(w, shift_lo), low4)); \
        __m512 hi = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srlv_epi32(w, shift_hi), low4)); \
        __m512 dv = _mm512_set1_ps(d[B]);                                                       \
        for (int r = 0; r < rows; r++) {                                                        \
            const float *xr = xp + (size_t)r * k + Q4_BLOCK * (B);                              \
            __m512 sum = _mm512_mul_ps(lo, _mm512_loadu_ps(xr));                                \
            sum = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xr + 16), sum);                           \
            ACC[r] = _mm512_fmadd_ps(sum, dv, ACC[r]);                                          \
        }                                                                                       \
    } while (0)
    FOR_BLOCK_PAIRS(blocks, Q4_F32_BLOCK);
#undef Q4_F32_BLOCK
    for (int r = 0; r < rows; r++)
        out[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[r], acc1[r])) +
                 dot(m, xsum + (size_t)r * blocks, blocks);
#elif defined(__AVX2__) && defined(__FMA__)
    x += (size_t)r0 * k;
    xsum += (size_t)r0 * blocks;
    (void)total;
    __m256 acc0[Q4_MAX_ROWS], acc1[Q4_MAX_ROWS];
    for (int r = 0; r < rows; r++) acc0[r] = acc1[r] = _mm256_setzero_ps();
    const __m128i low4 = _mm_set1_epi8(0x0f);
#define Q4_AVX2_BLOCK(B, ACC)                                                             \
    do {                                                                                  \
        __m128i w = _mm_loadu_si128((const __m128i *)(q + 16 * (B)));                     \
        __m128i lo = _mm_and_si128(w, low4), hi = _mm_and_si128(_mm_srli_epi16(w, 4), low4); \
        __m256 v0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));                         \
        __m256 v1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));      \
        __m256 v2 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));                         \
        __m256 v3 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));      \
        __m256 dv = _mm256_set1_ps(d[B]);                                                 \
        for (int r = 0; r < rows; r++) {                                                  \
            const float *xr = x + (size_t)r * k + Q4_BLOCK * (B);                         \
            __m256 sum = _mm256_mul_ps(v0, _mm256_loadu_ps(xr));                          \
            sum = _mm256_fmadd_ps(v1, _mm256_loadu_ps(xr + 8), sum);                      \
            sum = _mm256_fmadd_ps(v2, _mm256_loadu_ps(xr + 16), sum);                     \
            sum = _mm256_fmadd_ps(v3, _mm256_loadu_ps(xr + 24), sum);                     \
            ACC[r] = _mm256_fmadd_ps(sum, dv, ACC[r]);                                    \
        }                                                                                 \
    } while (0)
    FOR_BLOCK_PAIRS(blocks, Q4_AVX2_BLOCK);
#undef Q4_AVX2_BLOCK
    for (int r = 0; r < rows; r++)
        out[r] = hsum256(_mm256_add_ps(acc0[r], acc1[r])) + dot(m, xsum + (size_t)r * blocks, blocks);
#else
    x += (size_t)r0 * k;
    xsum += (size_t)r0 * blocks;
    (void)total;
    for (int r = 0; r < rows; r++) {
        float acc = 0.0f;
        const float *xr = x + (size_t)r * k;
        for (int b = 0; b < blocks; b++) {
            const uint8_t *qb = q + 16 * b;
            float sum = 0.0f;
            for (int i = 0; i < 16; i++)
                sum += (float)(qb[i] & 0x0f) * xr[32 * b + i] + (float)(qb[i] >> 4) * xr[32 * b + 16 + i];
            acc += d[b] * sum;
        }
        out[r] = acc + dot(m, xsum + (size_t)r * blocks, blocks);
    }
#endif
}

/* row_product over `rows` rows, in groups of at most Q4_GROUP_ROWS with the group's row
 * count as a compile-time constant. Each row's sums are the same in any group (a row has
 * its own accumulators), so the grouping changes no result; it keeps the accumulators in
 * registers: 16 rows at once need 32 of them, all AVX-512 has, and spilled (a 16-row step
 * took 2.7x an 8-row one). */
static void row_product_n(const uint8_t *q, const float *dm, int blocks, const float *x,
                          const float *xsum, int rows, int k, float *out) {
    if (rows <= Q4_GROUP_ROWS) {  /* one group: its offsets are constants (a decode step) */
        switch (rows) {
#define Q4_CASE(R) case R: row_product(q, dm, blocks, x, xsum, R, k, out, 0, R); break;
            FOR_EACH_GROUP_COUNT(Q4_CASE)
#undef Q4_CASE
        }
        return;
    }
    for (int r0 = 0; r0 < rows; r0 += Q4_GROUP_ROWS) {
        const int n = rows - r0 < Q4_GROUP_ROWS ? rows - r0 : Q4_GROUP_ROWS;
        switch (n) {
#define Q4_CASE(R) case R: row_product(q, dm, blocks, x, xsum, R, k, out + r0, r0, rows); break;
            FOR_EACH_GROUP_COUNT(Q4_CASE)
#undef Q4_CASE
        }
    }
}

int q4_max_rows(void) { return Q4_MAX_ROWS; }

/* How this build rounds activations for the 4-bit products: 0 fp32 (none), 1 bf16, 2 int8
 * per 32-block (see the Q4_BF16 and Q4_VNNI paths). */
int q4_activations(void) {
#if defined(Q4_VNNI)
    return 2;
#elif defined(Q4_BF16)
    return 1;
#else
    return 0;
#endif
}

/* y[r, j0:j1] += t[r] @ b_t[:, j0:j1] for every row: the LoRA's second factor, stored
 * transposed ([rank, n]) so each step is a vectorized axpy along the outputs, in the same
 * order for every output, row and split. */
static void add_lora_range(const float *b_t, const int *span, int rank, int n, const float *t,
                           int rows, int j0, int j1, float *y) {
    /* span[2i], span[2i + 1]: the outputs where row i of b_t can be nonzero (a fused q/k/v
     * or gate/up adapter is block-diagonal: each part's rank touches its own outputs);
     * skipping an exact zero leaves every sum bit for bit the same. NULL: everywhere. */
#define LORA_SKIPS(i, from, to) (span && ((to) <= span[2 * (i)] || (from) >= span[2 * (i) + 1]))
    for (int r = 0; r < rows; r++) {
        float *yr = y + (size_t)r * n;
        const float *tr = t + r * rank;
        int j = j0;
#if defined(__AVX512F__)
        /* 64 outputs at a time, summed over the rank in registers (through memory, each
         * of the rank's steps waited on the store of the one before) */
        for (; j + 64 <= j1; j += 64) {
            __m512 a0 = _mm512_loadu_ps(yr + j), a1 = _mm512_loadu_ps(yr + j + 16);
            __m512 a2 = _mm512_loadu_ps(yr + j + 32), a3 = _mm512_loadu_ps(yr + j + 48);
            for (int i = 0; i < rank; i++) {
                if (LORA_SKIPS(i, j, j + 64)) continue;
                const float *bi = b_t + (size_t)i * n + j;
                const __m512 ti = _mm512_set1_ps(tr[i]);
                a0 = _mm512_fmadd_ps(ti, _mm512_loadu_ps(bi), a0);
                a1 = _mm512_fmadd_ps(ti, _mm512_loadu_ps(bi + 16), a1);
                a2 = _mm512_fmadd_ps(ti, _mm512_loadu_ps(bi + 32), a2);
                a3 = _mm512_fmadd_ps(ti, _mm512_loadu_ps(bi + 48), a3);
            }
            _mm512_storeu_ps(yr + j, a0);
            _mm512_storeu_ps(yr + j + 16, a1);
            _mm512_storeu_ps(yr + j + 32, a2);
            _mm512_storeu_ps(yr + j + 48, a3);
        }
#endif
        for (; j < j1; j++) {  /* the same sums, one output at a time */
            float acc = yr[j];
            for (int i = 0; i < rank; i++)
                if (!LORA_SKIPS(i, j, j + 1)) acc = fmaf(tr[i], b_t[(size_t)i * n + j], acc);
            yr[j] = acc;
        }
    }
#undef LORA_SKIPS
}

/* Output rows [j0, j1) of y = x @ W.T (+ LoRA). */
static void matmul_range(const float *x, int rows, int k, int n, const uint8_t *qs,
                         const float *dm, const float *lora_b, const int *lora_span,
                         int rank, const float *xsum,
                         const float *t, int j0, int j1, float *y) {
    const int blocks = k / Q4_BLOCK;
    for (int j = j0; j < j1; j++) {
        float out[Q4_MAX_ROWS];
        row_product_n(qs + (size_t)j * blocks * 16, dm + (size_t)j * blocks * 2, blocks, x, xsum,
                      rows, k, out);
        for (int r = 0; r < rows; r++) y[(size_t)r * n + j] = out[r];
    }
    if (rank) add_lora_range(lora_b, lora_span, rank, n, t, rows, j0, j1, y);
}

/* Floats of scratch q4_matmul needs. */
long q4_scratch_floats(int rows, int k, int rank) {
    return (long)(prep_floats(rows, k) + (size_t)rows * rank + 16);
}

/* y[rows, n] = x[rows, k] @ W.T (+ LoRA) for 4-bit weights w; scratch:
 * q4_scratch_floats(rows, k, rank) floats. Returns 0, or -1 when rows or k are out of range. */
int q4_matmul(const q4_weight_t *w, const float *x, int rows, float *scratch, float *y) {
    const int k = w->k, n = w->n, rank = w->rank;
    if (rows < 1 || rows > Q4_MAX_ROWS || k % Q4_BLOCK != 0) return -1;
    float *t = scratch + prep_floats(rows, k);  /* [rows, rank]: a @ x */
    prepare_rows(x, rows, k, w->lora_a, rank, scratch, t);
#pragma omp parallel
    {
        SPLIT(n, j0, j1);
        matmul_range(x, rows, k, n, (const uint8_t *)w->qs, w->scales, w->lora_b_t,
                     w->lora_span, rank, scratch, t, j0, j1, y);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------
 * 8-bit weights for the vocabulary projection. GGUF files keep the token embeddings (tied
 * to the output head in SmolLM2) in Q8_0: int8 codes in blocks of 32 with one fp16 scale,
 * W[j, 32b + i] = d * q_i. Re-quantizing them to 4 bits would change every logit, so the
 * head keeps its own 8 bits: qs int8 [n, k], d [n, k/32] (fp16 values widened to fp32, so a
 * block's scale is a broadcast load). Activations stay fp32.
 * ------------------------------------------------------------------------------------ */

static inline __attribute__((always_inline)) void row_product_q8(
    const int8_t *q, const float *d, int blocks, const float *x, const int rows, int k,
    float *out) {
#if defined(__AVX512F__)
    __m512 acc0[Q4_MAX_ROWS], acc1[Q4_MAX_ROWS];
    for (int r = 0; r < rows; r++) acc0[r] = acc1[r] = _mm512_setzero_ps();
#define Q8_BLOCK(B, ACC)                                                                       \
    do {                                                                                       \
        __m512 w0 = _mm512_cvtepi32_ps(                                                        \
            _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q + 32 * (B)))));           \
        __m512 w1 = _mm512_cvtepi32_ps(                                                        \
            _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q + 32 * (B) + 16))));      \
        __m512 scale = _mm512_set1_ps(d[B]);                                    \
        for (int r = 0; r < rows; r++) {                                                       \
            const float *xr = x + (size_t)r * k + Q4_BLOCK * (B);                              \
            __m512 sum = _mm512_mul_ps(w0, _mm512_loadu_ps(xr));                               \
            sum = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xr + 16), sum);                          \
            ACC[r] = _mm512_fmadd_ps(sum, scale, ACC[r]);                                      \
        }                                                                                      \
    } while (0)
    FOR_BLOCK_PAIRS(blocks, Q8_BLOCK);
#undef Q8_BLOCK
    for (int r = 0; r < rows; r++) out[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[r], acc1[r]));
#elif defined(__AVX2__) && defined(__FMA__)
    __m256 acc0[Q4_MAX_ROWS], acc1[Q4_MAX_ROWS];
    for (int r = 0; r < rows; r++) acc0[r] = acc1[r] = _mm256_setzero_ps();
#define Q8_BLOCK(B, ACC)                                                                       \
    do {                                                                                       \
        __m256 w[4];                                                                           \
        for (int c = 0; c < 4; c++)                                                            \
            w[c] = _mm256_cvtepi32_ps(                                                         \
                _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + 32 * (B) + 8 * c)))); \
        __m256 scale = _mm256_set1_ps(d[B]);                                    \
        for (int r = 0; r < rows; r++) {                                                       \
            const float *xr = x + (size_t)r * k + Q4_BLOCK * (B);                              \
            __m256 sum = _mm256_mul_ps(w[0], _mm256_loadu_ps(xr));                             \
            for (int c = 1; c < 4; c++) sum = _mm256_fmadd_ps(w[c], _mm256_loadu_ps(xr + 8 * c), sum); \
            ACC[r] = _mm256_fmadd_ps(sum, scale, ACC[r]);                                      \
        }                                                                                      \
    } while (0)
    FOR_BLOCK_PAIRS(blocks, Q8_BLOCK);
#undef Q8_BLOCK
    for (int r = 0; r < rows; r++) out[r] = hsum256(_mm256_add_ps(acc0[r], acc1[r]));
#else
    for (int r = 0; r < rows; r++) {
        float total = 0.0f;
        for (int b = 0; b < blocks; b++) {
            float sum = 0.0f;
            for (int i = 0; i < Q4_BLOCK; i++) sum += (float)q[32 * b + i] * x[(size_t)r * k + 32 * b + i];
            total += d[b] * sum;
        }
        out[r] = total;
    }
#endif
}

/* row_product_q8 in groups, as row_product_n. */
static void row_product_q8_n(const int8_t *q, const float *d, int blocks, const float *x,
                             int rows, int k, float *out) {
    if (rows <= Q4_GROUP_ROWS) {
        switch (rows) {
#define Q8_CASE(R) case R: row_product_q8(q, d, blocks, x, R, k, out); break;
            FOR_EACH_GROUP_COUNT(Q8_CASE)
#undef Q8_CASE
        }
        return;
    }
    for (int r0 = 0; r0 < rows; r0 += Q4_GROUP_ROWS) {
        const int n = rows - r0 < Q4_GROUP_ROWS ? rows - r0 : Q4_GROUP_ROWS;
        const float *xg = x + (size_t)r0 * k;
        switch (n) {
#define Q8_CASE(R) case R: row_product_q8(q, d, blocks, xg, R, k, out + r0); break;
            FOR_EACH_GROUP_COUNT(Q8_CASE)
#undef Q8_CASE
        }
    }
}

/* y[rows, n] = x[rows, k] @ W.T for Q8_0 weights w (+ LoRA); scratch: rows * rank + 16
 * floats. Returns 0, or -1 when rows or k are out of range. */
int q8_matmul(const q4_weight_t *w, const float *x, int rows, float *scratch, float *y) {
    const int k = w->k, n = w->n, rank = w->rank;
    const int8_t *qs = (const int8_t *)w->qs;
    const float *d = w->scales, *lora_b = w->lora_b_t;
    const int *lora_span = w->lora_span;
    if (rows < 1 || rows > Q4_MAX_ROWS || k % Q4_BLOCK != 0) return -1;
    const int blocks = k / Q4_BLOCK;
    lora_a_range(x, rows, k, w->lora_a, rank, 0, rank, scratch);
#pragma omp parallel
    {
        SPLIT(n, j0, j1);
        for (int j = j0; j < j1; j++) {
            float out[Q4_MAX_ROWS];
            row_product_q8_n(qs + (size_t)j * k, d + (size_t)j * blocks, blocks, x, rows, k, out);
            for (int r = 0; r < rows; r++) y[(size_t)r * n + j] = out[r];
        }
        if (rank) add_lora_range(lora_b, lora_span, rank, n, scratch, rows, j0, j1, y);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------
 * A whole decode step through every layer, for a few rows (one token each of up to four
 * sequences, drafted tokens included) in one call: the Python version spends more time
 * dispatching its ~20 small ops per layer than multiplying. It computes what
 * chatbot/engine/model.py's Llama.forward computes for decode rows that attend one by
 * one, with a bf16 KV cache: RMSNorm, fused q/k/v, RoPE (half-split), cache write,
 * grouped-query attention over the row's own slot up to its position, o, RMSNorm,
 * fused gate/up, SiLU, down, each with the residual.
 *
 * One OpenMP parallel region for the whole step; the threads split every matmul by
 * output rows and every attention by (row, head), and meet at a spinning barrier (the
 * region is a few milliseconds long; OpenMP's own barriers sleep under
 * OMP_WAIT_POLICY=PASSIVE and would cost a wake-up each). A waiter that has spun for a
 * few microseconds yields its core instead, so a peer thread that the OS has queued
 * behind it (another process busy on a 2-core box) gets to run.
 * ------------------------------------------------------------------------------------ */

#ifndef SPIN_BEFORE_YIELD
#define SPIN_BEFORE_YIELD 4000
#endif

typedef struct {
    atomic_int count;
    atomic_int generation;
} spin_barrier_t;

static void spin_barrier(spin_barrier_t *b, int nth) {
    if (nth == 1) return;
    int gen = atomic_load_explicit(&b->generation, memory_order_acquire);
    if (atomic_fetch_add_explicit(&b->count, 1, memory_order_acq_rel) == nth - 1) {
        atomic_store_explicit(&b->count, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&b->generation, 1, memory_order_release);
    } else {
        /* Spin briefly (the usual wait is microseconds), then yield the core: on a busy
         * 2-core box the thread we wait for may be queued behind us on this very core. */
        for (int spins = 0; atomic_load_explicit(&b->generation, memory_order_acquire) == gen; spins++) {
            if (spins < SPIN_BEFORE_YIELD) {
#if defined(__x86_64__) || defined(__i386__)
                __builtin_ia32_pause();
#endif
            } else {
                sched_yield();
            }
        }
    }
}


/* Softmax attention of one query q [hd] over len bf16 keys/values ([len, hd] each):
 * writes the unnormalized output to o and returns 1 / (sum of weights). */
static float attend(const float *q, const uint16_t *keys, const uint16_t *vals, int len, int hd,
                    float scale, float *scores, float *o) {
    float mx = -INFINITY;
#if defined(__AVX512F__)
    if (hd % 16 == 0) {
        for (int pos = 0; pos < len; pos++) {
            const uint16_t *kr = keys + (size_t)pos * hd;
            __m512 acc = _mm512_setzero_ps();
            for (int i = 0; i < hd; i += 16) {
                __m512 k16 = _mm512_castsi512_ps(_mm512_slli_epi32(
                    _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(kr + i))), 16));
                acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), k16, acc);
            }
            float sc = _mm512_reduce_add_ps(acc) * scale;
            scores[pos] = sc;
            if (sc > mx) mx = sc;
        }
        float sum = 0.0f;
        for (int pos = 0; pos < len; pos++) {
            scores[pos] = expf(scores[pos] - mx);
            sum += scores[pos];
        }
        __m512 acc[16];
        const int chunks = hd / 16;
        for (int c = 0; c < chunks; c++) acc[c] = _mm512_setzero_ps();
        for (int pos = 0; pos < len; pos++) {
            const uint16_t *vr = vals + (size_t)pos * hd;
            const __m512 pw = _mm512_set1_ps(scores[pos]);
            for (int c = 0; c < chunks; c++) {
                __m512 v16 = _mm512_castsi512_ps(_mm512_slli_epi32(
                    _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(vr + 16 * c))), 16));
                acc[c] = _mm512_fmadd_ps(pw, v16, acc[c]);
            }
        }
        for (int c = 0; c < chunks; c++) _mm512_storeu_ps(o + 16 * c, acc[c]);
        return 1.0f / sum;
    }
#endif
    for (int pos = 0; pos < len; pos++) {
        const uint16_t *kr = keys + (size_t)pos * hd;
        float sc = 0.0f;
#pragma omp simd reduction(+ : sc)
        for (int i = 0; i < hd; i++) sc += q[i] * bf16_to_float(kr[i]);
        sc *= scale;
        scores[pos] = sc;
        if (sc > mx) mx = sc;
    }
    float sum = 0.0f;
    for (int pos = 0; pos < len; pos++) {
        scores[pos] = expf(scores[pos] - mx);
        sum += scores[pos];
    }
    for (int i = 0; i < hd; i++) o[i] = 0.0f;
    for (int pos = 0; pos < len; pos++) {
        const uint16_t *vr = vals + (size_t)pos * hd;
        const float pw = scores[pos];
#pragma omp simd
        for (int i = 0; i < hd; i++) o[i] += pw * bf16_to_float(vr[i]);
    }
    return 1.0f / sum;
}

static void rms_norm_rows(const float *x, const float *w, float eps, int rows, int n, float *out) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * n;
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int i = 0; i < n; i++) ss += xr[i] * xr[i];
        float inv = 1.0f / sqrtf(ss / (float)n + eps);
#pragma omp simd
        for (int i = 0; i < n; i++) out[(size_t)r * n + i] = xr[i] * inv * w[i];
    }
}

/* Returns 0, -1 for a step or model it cannot run, -2 when out of memory. */
int q4_decode(const q4_decode_t *step) {
    const int layers = step->layers, hidden = step->hidden;
    const int inter = step->inter, nh = step->heads;
    const int nkv = step->kv_heads, hd = step->head_dim;
    const int64_t cap = step->capacity, n_slots = step->n_slots;
    const int rows = step->rows;
    const int *positions = step->positions, *slots = step->slots;
    float *x = step->x;
    const float *cos_t = step->cos, *sin_t = step->sin;
    uint16_t *k_cache = step->k_cache, *v_cache = step->v_cache;
    const float eps = step->eps;
    if (rows < 1 || rows > Q4_MAX_ROWS || hidden % Q4_BLOCK || inter % Q4_BLOCK ||
        (nh * hd) % Q4_BLOCK || nh % nkv || hd > 256 || hd % 2)
        return -1;
    int max_len = 0;
    for (int r = 0; r < rows; r++) {
        if (positions[r] < 0 || positions[r] >= cap || positions[r] >= step->max_positions ||
            slots[r] < 0 || slots[r] >= n_slots)
            return -1;
        if (positions[r] + 1 > max_len) max_len = positions[r] + 1;
    }
    const int qkv_n = (nh + 2 * nkv) * hd, rep = nh / nkv;
    /* every weight's shape, as this step's config says */
    const int w_n[W_N] = {qkv_n, hidden, 2 * inter, hidden};
    const int w_k[W_N] = {hidden, nh * hd, hidden, inter};
    int max_rank = 0;
    for (int li = 0; li < layers; li++)
        for (int w = 0; w < W_N; w++) {
            const q4_weight_t *wt = &step->layer[li].w[w];
            if (wt->n != w_n[w] || wt->k != w_k[w] || wt->rank < 0) return -1;
            if (wt->rank > max_rank) max_rank = wt->rank;
        }
    const int widest = qkv_n > 2 * inter ? qkv_n : 2 * inter;
    int widest_in = hidden > inter ? hidden : inter;  /* the matmuls' input widths */
    if (nh * hd > widest_in) widest_in = nh * hd;
    /* scratch: h, y (widest), att, act, xsum, t, per-thread scores */
    const int nthreads = omp_get_max_threads();
    size_t h_sz = (size_t)rows * (hidden > inter ? hidden : inter);
    size_t sz = h_sz + (size_t)rows * widest + (size_t)rows * nh * hd + (size_t)rows * inter +
                prep_floats(rows, widest_in) + (size_t)rows * (max_rank + 1) +
                (size_t)nthreads * (max_len + 16);
    float *scratch = (float *)malloc(sz * sizeof(float));
    if (!scratch) return -2;
    float *h = scratch, *y = h + h_sz, *att = y + (size_t)rows * widest;
    float *act = att + (size_t)rows * nh * hd, *xsum = act + (size_t)rows * inter;
    float *t = xsum + prep_floats(rows, widest_in);
    float *scores_all = t + (size_t)rows * (max_rank + 1);
    const size_t slot_stride = (size_t)nkv * cap * hd, layer_stride = (size_t)n_slots * slot_stride;
    const float scale = 1.0f / sqrtf((float)hd);
    spin_barrier_t bar = {0, 0};

#pragma omp parallel
    {
        const int nth = omp_get_num_threads(), ith = omp_get_thread_num();
        float *scores = scores_all + (size_t)ith * (max_len + 16);
        for (int li = 0; li < layers; li++) {
            const q4_layer_t *L = &step->layer[li];
#define WEIGHT(W) (const uint8_t *)L->w[W].qs, L->w[W].scales
#define LORA_A(W) L->w[W].lora_a
#define LORA_B(W) L->w[W].lora_b_t, L->w[W].lora_span
#define RANK(W) L->w[W].rank
/* a matmul's input: thread 0 prepares the activations, every thread some of the adapter's
 * a @ x (those are independent dot products; the caller's barrier follows) */
#define PREPARE(in, width, w)                                                       \
    do {                                                                            \
        if (ith == 0) prepare_rows(in, rows, width, NULL, 0, xsum, t);              \
        SPLIT(RANK(w), i0, i1);                                                     \
        lora_a_range(in, rows, width, LORA_A(w), RANK(w), i0, i1, t);               \
    } while (0)
            uint16_t *kc = k_cache + li * layer_stride, *vc = v_cache + li * layer_stride;
            /* attention block: h = norm(x); qkv = h @ Wqkv */
            if (ith == 0) rms_norm_rows(x, L->attn_norm, eps, rows, hidden, h);
            spin_barrier(&bar, nth);
            PREPARE(h, hidden, W_QKV);
            spin_barrier(&bar, nth);
            {
                SPLIT(qkv_n, j0, j1);
                matmul_range(h, rows, hidden, qkv_n, WEIGHT(W_QKV), LORA_B(W_QKV), RANK(W_QKV),
                             xsum, t, j0, j1, y);
            }
            spin_barrier(&bar, nth);
            if (ith == 0) {  /* RoPE on q and k, then k and v into the cache */
                for (int r = 0; r < rows; r++) {
                    float *row = y + (size_t)r * qkv_n;
                    const float *c = cos_t + (size_t)positions[r] * hd;
                    const float *s = sin_t + (size_t)positions[r] * hd;
                    const int half = hd / 2;
                    for (int head = 0; head < nh + nkv; head++) {
                        float *v = row + (size_t)head * hd;
                        for (int i = 0; i < half; i++) {
                            float a = v[i], b = v[i + half];
                            v[i] = a * c[i] - b * s[i];
                            v[i + half] = b * c[i + half] + a * s[i + half];
                        }
                    }
                    for (int g = 0; g < nkv; g++) {
                        size_t at = (size_t)slots[r] * slot_stride + ((size_t)g * cap + positions[r]) * hd;
                        const float *kr = row + (size_t)(nh + g) * hd, *vr = row + (size_t)(nh + nkv + g) * hd;
                        for (int i = 0; i < hd; i++) {
                            kc[at + i] = float_to_bf16(kr[i]);
                            vc[at + i] = float_to_bf16(vr[i]);
                        }
                    }
                }
            }
            spin_barrier(&bar, nth);
            {  /* attention, one (row, head) at a time */
                SPLIT(rows * nh, j0, j1);
                for (int item = j0; item < j1; item++) {
                    const int r = item / nh, head = item % nh, g = head / rep, len = positions[r] + 1;
                    const float *qf = y + (size_t)r * qkv_n + (size_t)head * hd;
                    float q[256];
                    for (int i = 0; i < hd; i++) q[i] = bf16_to_float(float_to_bf16(qf[i]));
                    const uint16_t *keys = kc + (size_t)slots[r] * slot_stride + (size_t)g * cap * hd;
                    const uint16_t *vals = vc + (size_t)slots[r] * slot_stride + (size_t)g * cap * hd;
                    float o[256];
                    const float inv = attend(q, keys, vals, len, hd, scale, scores, o);
                    float *out = att + (size_t)r * nh * hd + (size_t)head * hd;
                    /* the torch path's attention returns the cache's dtype */
                    for (int i = 0; i < hd; i++) out[i] = bf16_to_float(float_to_bf16(o[i] * inv));
                }
            }
            spin_barrier(&bar, nth);
            PREPARE(att, nh * hd, W_O);
            spin_barrier(&bar, nth);
            {
                SPLIT(hidden, j0, j1);
                matmul_range(att, rows, nh * hd, hidden, WEIGHT(W_O), LORA_B(W_O), RANK(W_O), xsum, t,
                             j0, j1, y);
            }
            spin_barrier(&bar, nth);
            if (ith == 0) {  /* residual; MLP block: h = norm(x) */
                for (size_t i = 0; i < (size_t)rows * hidden; i++) x[i] += y[i];
                rms_norm_rows(x, L->mlp_norm, eps, rows, hidden, h);
            }
            spin_barrier(&bar, nth);
            PREPARE(h, hidden, W_GATE_UP);
            spin_barrier(&bar, nth);
            {
                SPLIT(2 * inter, j0, j1);
                matmul_range(h, rows, hidden, 2 * inter, WEIGHT(W_GATE_UP), LORA_B(W_GATE_UP),
                             RANK(W_GATE_UP), xsum, t, j0, j1, y);
            }
            spin_barrier(&bar, nth);
            {  /* SiLU(gate) * up, split across the threads */
                SPLIT(inter, i0, i1);
                for (int r = 0; r < rows; r++) {
                    const float *g = y + (size_t)r * 2 * inter, *u = g + inter;
                    for (int i = i0; i < i1; i++)
                        act[(size_t)r * inter + i] = g[i] / (1.0f + expf(-g[i])) * u[i];
                }
            }
            spin_barrier(&bar, nth);
            PREPARE(act, inter, W_DOWN);
            spin_barrier(&bar, nth);
            {
                SPLIT(hidden, j0, j1);
                matmul_range(act, rows, inter, hidden, WEIGHT(W_DOWN), LORA_B(W_DOWN), RANK(W_DOWN),
                             xsum, t, j0, j1, y);
            }
            spin_barrier(&bar, nth);
            if (ith == 0)
                for (size_t i = 0; i < (size_t)rows * hidden; i++) x[i] += y[i];
            spin_barrier(&bar, nth);
#undef WEIGHT
#undef LORA_A
#undef LORA_B
#undef RANK
#undef PREPARE
        }
    }
    free(scratch);
    return 0;
}
