/* VECTOR_CLONES: a function built twice, for x86-64-v3 (AVX2 and FMA) and for the baseline CPU, the
 * C library choosing one at load time (GCC's target_clones, on Linux/x86-64); elsewhere built once.
 * Included by the kernels whose loops the compiler vectorizes. */
#ifndef FLOWLIB_CLONES_H
#define FLOWLIB_CLONES_H

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define VECTOR_CLONES
#endif

#endif
