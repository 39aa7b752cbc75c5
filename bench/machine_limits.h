#ifndef MOESERVE_BENCH_MACHINE_LIMITS_H_
#define MOESERVE_BENCH_MACHINE_LIMITS_H_

// What this machine can do at most, measured now, so benchmarks can report fractions of it.
// Both take a few hundred milliseconds and hold about 1 GiB (bandwidth) while running.

#include <vector>

namespace moeserve::bench {

// Sustained memory read bandwidth in GB/s (1e9 bytes per second) with `threads` threads, each
// summing its share of 128 MiB slices of a 1 GiB buffer (far larger than the caches) with SIMD
// loads. Best of many runs.
double MeasureReadBandwidthGBs(int threads);

// Peak float32 multiply-add throughput in GFLOP/s (an FMA counts 2 flops per lane) with
// `threads` threads, each running independent FMA chains in registers with the widest SIMD the
// CPU has (AVX-512, AVX2+FMA, else scalar). Best of many short runs.
double MeasureFmaPeakGflops(int threads);

// Seconds on a monotonic clock, for timing.
double NowSeconds();

// The p-th percentile (0-100, nearest rank) of v; 0 for an empty v. The benchmarks report
// medians and tails, not means alone, because the machine is shared.
double Percentile(std::vector<double> v, double p);

}  // namespace moeserve::bench

#endif  // MOESERVE_BENCH_MACHINE_LIMITS_H_
