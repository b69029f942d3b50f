/*
 * The kernels' runtime: the allocator hook and the one CPU-feature detection. Nothing here knows Python:
 * the hook is plain malloc / free until the bindings (module.c) switch it to PyMem_RawMalloc /
 * PyMem_RawFree at module init (so that tracemalloc sees the kernels' allocations), and the feature
 * flags are read once by runtime_init and narrowed by simd_select when a test asks for the scalar paths.
 */
#include "internal.h"

int cpu_has_avx2 = 0;
int cpu_has_avx512 = 0;

static void *(*alloc_hook)(size_t) = malloc;
static void (*free_hook)(void *) = free;

void ss_set_allocator(void *(*alloc)(size_t), void (*release)(void *)) {
    alloc_hook = alloc ? alloc : malloc;
    free_hook = release ? release : free;
}

void *ss_malloc(size_t n) { return alloc_hook(n); }
void ss_free(void *p) { free_hook(p); }

int cpu_supports(int feature) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    switch (feature) {
    case CPU_AVX2:
        /* 0 where the AVX2 paths are not compiled */
#ifdef HAVE_AVX2_PATH
        return __builtin_cpu_supports("avx2");
#else
        return 0;
#endif
    case CPU_AVX512:
        /* the AVX-512 subsets of AVX512_TARGET */
#ifdef HAVE_AVX512_PATH
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vbmi") &&
               __builtin_cpu_supports("avx512vbmi2");
#else
        return 0;
#endif
    case CPU_CLMUL:
        return __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
    case CPU_VPCLMUL:
        return __builtin_cpu_supports("vpclmulqdq") && __builtin_cpu_supports("avx2");
    default:
        return 0;
    }
#else
    (void)feature;
    return 0;
#endif
}

int simd_select(int on, int wide) {
    int prev = cpu_has_avx2 > 0;
    cpu_has_avx2 = on ? cpu_supports(CPU_AVX2) : 0;
    cpu_has_avx512 = (wide < 0 ? on : wide) ? cpu_supports(CPU_AVX512) : 0;
    return prev;
}

void runtime_init(void) {
    rans_encode_init();
    tables_init();
    rans_decode_init();
    simd_select(1, 1);
}
