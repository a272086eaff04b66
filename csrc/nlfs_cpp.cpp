// nlfs._cpp: the compiled CPU evaluator of lowered loss programs (see nlfs/backends/_cpp.py).
//
// A program is a validated, topologically ordered instruction list (opcodes from
// ops_generated.h, which is generated from the ops table). For every row of the N x C batch the
// kernel computes, in one pass (in double for float64 logits; for float32 logits see run_rows):
//   * the per-sample loss  sum_c f(...)  (or the mean over classes), and
//   * d loss_n / d z_n by reverse mode over the instruction list, combined through the softmax
//     and log-softmax Jacobians: dz = p * (g_p - sum(p g_p)) + g_logp - p * sum(g_logp) + g_z.
// Elements are processed in chunks per instruction (CHUNK classes of one long row, or a block of
// short rows, each padded to LANES), so the per-instruction dispatch is amortised and the
// generated inner loops are plain loops over contiguous doubles or floats.
// The generated loops vectorise (setup.py: -march=native, libmvec SIMD exp/log/...), and the row
// reductions use fixed-order lane partial sums (lane_add), so they vectorise too.
// Blocks of rows are handed to std::threads dynamically; a row's reductions never cross threads and
// its arithmetic depends only on the row, so results are bit-identical for every thread count.
// Ops over a row's classes (sum_classes; OP_OVER_CLASSES) need the whole row at once: a program that
// has one is evaluated a whole row per chunk (or a block of whole rows), in double, and not specialised
// to the target class; the generated forward_rows/backward_rows reduce over each row's classes
// between the argument's forward and its consumers (and sum the consumers' adjoints on the way back).
// No torch headers: buffers come as raw addresses.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <numeric>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "ops_generated.h"

namespace py = pybind11;
using namespace nlfs_gen;

namespace {

constexpr int CHUNK = 256;
#ifndef NLFS_FP32_COMPUTE
#define NLFS_FP32_COMPUTE 1
#endif
constexpr bool FP32_COMPUTE_DEFAULT = NLFS_FP32_COMPUTE != 0;
// fp32 compute: a row whose gradient's estimated float rounding noise (FP32_NOISE_ULPS ulp of every
// term of the softmax-Jacobian combination) exceeds FP32_TOL * (1 + |dz|) is recomputed in double.
std::atomic<double> g_fp32_noise_ulps{16.0};
std::atomic<int64_t> g_fp32_redo_rows{0};
constexpr double FP32_TOL = 1e-6;
// Below this many classes the float path's per-row work (softmax in double, checks) costs more
// than its wider vectors save: compute in double.
constexpr int64_t FP32_MIN_CLASSES = 32;
enum Leaf { L_Y = 0, L_P = 1, L_Z = 2, L_LOGP = 3, L_C = 4, L_NUM = 5, L_CONST = 6 };
enum TargetKind { T_INDEX_I64 = 0, T_PROB_F32 = 1, T_PROB_F64 = 2 };
enum DType { D_F32 = 0, D_F64 = 1 };

// ------------------------------------------------------------------------------------------------
// Program

struct Program {
  std::vector<int> op, a0, a1;
  std::vector<double> value;
  std::vector<int> const_index;
  std::vector<char> needs_grad;  // the instruction's subtree holds p, logp or z
  int n_consts = 0;
  int reduction = 0;  // 0 class_sum, 1 element_mean
  bool use_p = false, use_logp = false, use_y = false, use_z = false;
  bool over_classes = false;  // holds an op over a row's classes (evaluated whole rows at a time)
  int leaf_slot[N_LEAF] = {-1, -1, -1, -1, -1, -1, -1};  // where y, p, z, logp are (each at most once)

  Program(std::vector<int> ops, std::vector<int> args0, std::vector<int> args1,
          std::vector<double> values, int n_consts_, int reduction_)
      : op(std::move(ops)), a0(std::move(args0)), a1(std::move(args1)), value(std::move(values)),
        n_consts(n_consts_), reduction(reduction_) {
    const size_t n = op.size();
    if (n == 0) throw std::invalid_argument("program is empty");
    if (n > (1u << 20)) throw std::invalid_argument("program is too long");
    if (a0.size() != n || a1.size() != n || value.size() != n)
      throw std::invalid_argument("program arrays (ops, args0, args1, values) differ in length");
    if (n_consts < 0) throw std::invalid_argument("n_consts must be >= 0");
    if (reduction != 0 && reduction != 1)
      throw std::invalid_argument("reduction must be 0 (class_sum) or 1 (element_mean)");
    const_index.assign(n, -1);
    needs_grad.assign(n, 0);
    for (size_t k = 0; k < n; ++k) {
      const int o = op[k];
      const std::string where = "instruction " + std::to_string(k);
      if (o < 0 || o >= N_OPCODES)
        throw std::invalid_argument(where + ": opcode " + std::to_string(o) + " out of range [0, " +
                                    std::to_string(N_OPCODES) + ")");
      const int arity = OP_ARITY[o];
      const int args[2] = {a0[k], a1[k]};
      for (int j = 0; j < 2; ++j) {
        if (j < arity) {
          if (args[j] < 0 || static_cast<size_t>(args[j]) >= k)
            throw std::invalid_argument(where + " (" + OP_NAMES[o] + "): argument slot " +
                                        std::to_string(args[j]) + " must refer to an earlier instruction");
        } else if (args[j] != -1) {
          throw std::invalid_argument(where + " (" + OP_NAMES[o] + "): takes " + std::to_string(arity) +
                                      " argument(s); unused slots must be -1");
        }
      }
      if (o == L_CONST) {
        const double v = value[k];
        if (!(v >= 0.0) || v != static_cast<double>(static_cast<int64_t>(v)) || v >= n_consts)
          throw std::invalid_argument(where + ": constant index " + std::to_string(v) + " out of range [0, " +
                                      std::to_string(n_consts) + ")");
        const_index[k] = static_cast<int>(v);
      }
      if (o == L_Y || o == L_P || o == L_Z || o == L_LOGP) {
        if (leaf_slot[o] >= 0)
          throw std::invalid_argument(where + ": leaf " + OP_NAMES[o] + " appears twice (instruction " +
                                      std::to_string(leaf_slot[o]) + " already is one); merge equal leaves");
        leaf_slot[o] = static_cast<int>(k);
      }
      if (OP_OVER_CLASSES[o]) over_classes = true;
      if (o == L_P) use_p = true;
      if (o == L_LOGP) use_logp = true;
      if (o == L_Y) use_y = true;
      if (o == L_Z) use_z = true;
      if (o == L_P || o == L_LOGP || o == L_Z) needs_grad[k] = 1;
      for (int j = 0; j < arity; ++j)
        if (needs_grad[args[j]]) needs_grad[k] = 1;
    }
  }
  size_t size() const { return op.size(); }
  bool root_grad() const { return needs_grad.back() != 0; }
  // reads none of y, p, z, logp: one value for every element
  // (an op over classes is not: sum_classes(2) is 2 * C)
  bool is_uniform() const { return !use_p && !use_z && !use_logp && !use_y && !over_classes; }
  // the leaf (L_P, L_Z, L_LOGP) occurs and receives an adjoint
  bool leaf_grad(int leaf) const { return leaf_slot[leaf] >= 0 && needs_grad[leaf_slot[leaf]]; }
};

// ------------------------------------------------------------------------------------------------
// Threads: a small persistent pool; the caller runs part 0 itself.

int default_threads() {
  if (const char* env = std::getenv("NLFS_CPP_THREADS")) {
    const int v = std::atoi(env);
    if (v > 0) return v;
  }
  const unsigned hc = std::thread::hardware_concurrency();
  return hc ? static_cast<int>(hc) : 1;
}

std::atomic<int> g_threads{0};

int num_threads() {
  int t = g_threads.load();
  if (t <= 0) {
    t = default_threads();
    g_threads.store(t);
  }
  return t;
}

// Spin-then-sleep wait: a thread woken by the kernel starts tens of microseconds late on a VM,
// which is as long as a whole small batch takes. So a worker polls for the next job for
// g_spin_us after finishing one (and the caller polls for the workers' last blocks) before it
// sleeps on the condition variable. NLFS_CPP_SPIN_US=0 never spins.
int default_spin_us() {
  if (const char* env = std::getenv("NLFS_CPP_SPIN_US")) {
    const int v = std::atoi(env);
    if (v >= 0) return v;
  }
  return 200;
}
std::atomic<int> g_spin_us{default_spin_us()};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

template <typename Ready>
bool spin_until(Ready ready) {
  const int us = g_spin_us.load(std::memory_order_relaxed);
  if (us <= 0) return ready();
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (ready()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() > until) return ready();
  }
}

class Pool {
 public:
  explicit Pool(int n_workers) : pid_(getpid()) {
    for (int i = 0; i < n_workers; ++i) workers_.emplace_back([this, i] { loop(i + 1); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_.store(true);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int size() const { return static_cast<int>(workers_.size()) + 1; }
  pid_t pid() const { return pid_; }

  // Offer f(part) to parts - 1 workers and run f(0) on the caller. f must be safe to skip for any
  // part > 0 (the rows are handed out dynamically): once the caller is done, the job is closed, and
  // a worker that has not started yet (descheduled on a busy machine) skips it, so the caller waits
  // only for workers already inside f.
  void run(int parts, const std::function<void(int)>& f) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      job_ = &f;
      parts_ = parts;
      open_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    // an exception (bad_alloc...) in any part is rethrown here, after every worker has left f:
    // f's state lives on the caller's stack
    std::exception_ptr err;
    try {
      f(0);
    } catch (...) {
      err = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      open_ = false;
    }
    spin_until([this] { return active_.load(std::memory_order_acquire) == 0; });
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [this] { return active_.load() == 0; });
    job_ = nullptr;
    if (!err) std::swap(err, worker_error_);
    worker_error_ = nullptr;
    lk.unlock();
    if (err) std::rethrow_exception(err);
  }

 private:
  void loop(int part) {
    uint64_t seen = 0;
    for (;;) {
      spin_until([&] { return generation_.load(std::memory_order_acquire) != seen || stop_.load(); });
      const std::function<void(int)>* job;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_.load() || generation_.load() != seen; });
        if (stop_.load()) return;
        seen = generation_.load();
        if (!open_ || part >= parts_) continue;
        job = job_;
        active_.fetch_add(1);
      }
      std::exception_ptr err;
      try {
        (*job)(part);
      } catch (...) {
        err = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (err && !worker_error_) worker_error_ = err;
        if (active_.fetch_sub(1) == 1) done_cv_.notify_one();
      }
    }
  }

  pid_t pid_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int)>* job_ = nullptr;
  int parts_ = 0;
  std::atomic<int> active_{0};
  bool open_ = false;
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
  std::exception_ptr worker_error_;
};

std::mutex g_pool_mu;  // one batch at a time uses the pool
Pool* g_pool = nullptr;

// body(r0, r1) over blocks of rows handed out dynamically (an atomic counter): a thread that the OS
// deschedules holds up nobody. Each row is computed entirely by one thread, so the results do not
// depend on the thread count or on which thread took which block.
void parallel_rows(int64_t n_rows, int threads, int64_t align,
                   const std::function<void(int64_t, int64_t)>& body) {
  if (threads <= 1 || n_rows <= 1) {
    body(0, n_rows);
    return;
  }
  const int parts = static_cast<int>(std::min<int64_t>(threads, n_rows));
  std::lock_guard<std::mutex> lk(g_pool_mu);
  if (g_pool && g_pool->pid() != getpid()) g_pool = nullptr;  // forked child: the threads are gone
  if (!g_pool || g_pool->size() < parts) {
    delete g_pool;
    g_pool = new Pool(parts - 1);
  }
  // blocks are whole multiples of align rows (the kernel's row blocks start at multiples of align)
  int64_t block = std::max<int64_t>(1, n_rows / (static_cast<int64_t>(parts) * 16));
  block = (block + align - 1) / align * align;
  std::atomic<int64_t> next{0};
  g_pool->run(parts, [&](int) {
    for (;;) {
      const int64_t r0 = next.fetch_add(block);
      if (r0 >= n_rows) return;
      body(r0, std::min(n_rows, r0 + block));
    }
  });
}

// ------------------------------------------------------------------------------------------------
// The kernel

// 64-byte aligned scratch: every chunk buffer starts on a cache line and its stride is a multiple
// of LANES, so how GCC splits a loop into SIMD body and remainder depends only on the position in
// the row, never on the thread's heap addresses (libmvec and scalar libm may round differently).
template <typename T>
struct AlignedBuf {
  T* ptr = nullptr;
  size_t cap = 0;
  AlignedBuf() = default;
  AlignedBuf(const AlignedBuf&) = delete;
  AlignedBuf& operator=(const AlignedBuf&) = delete;
  ~AlignedBuf() { std::free(ptr); }
  T* get(size_t n) {
    if (n > cap) {
      std::free(ptr);
      const size_t bytes = ((std::max<size_t>(n, 1) * sizeof(T) + 63) / 64) * 64;
      ptr = static_cast<T*>(std::aligned_alloc(64, bytes));
      if (!ptr) throw std::bad_alloc();
      cap = bytes / sizeof(T);
    }
    return ptr;
  }
};

// Fixed-order partial sums over LANES<T> lanes (8 doubles / 16 floats: two AVX2 vectors, one
// AVX-512 vector): vectorisable and deterministic. Row sums accumulate in double in both paths.
template <typename T>
constexpr int LANES = sizeof(T) == 8 ? 8 : 16;

template <typename T>
inline int64_t round_lanes(int64_t n) { return (n + LANES<T> - 1) / LANES<T> * LANES<T>; }

// The lane sums below keep their LANES accumulators in registers as GCC vector-extension values
// (8 doubles each: one AVX-512 or two AVX2 registers); written as plain loops over acc[], GCC
// spills them to the stack on every iteration.
typedef double VD8 __attribute__((vector_size(64)));
typedef float VF8 __attribute__((vector_size(32)));

template <typename T>
inline VD8 load_vd8(const T* x) {
  if constexpr (sizeof(T) == 8) {
    VD8 v;
    std::memcpy(&v, x, sizeof(v));
    return v;
  } else {
    VF8 f;
    std::memcpy(&f, x, sizeof(f));
    return __builtin_convertvector(f, VD8);
  }
}

typedef long long VL8 __attribute__((vector_size(64)));

inline VD8 vabs(VD8 v) { return v < 0.0 ? -v : v; }

inline VD8 splat(double x) {
  VD8 v = {};
  return v + x;
}

template <typename T>
inline void store_vd8(T* dst, VD8 v) {
  if constexpr (sizeof(T) == 8) {
    std::memcpy(dst, &v, sizeof(v));
  } else {
    const VF8 f = __builtin_convertvector(v, VF8);
    std::memcpy(dst, &f, sizeof(f));
  }
}

// acc[l] += sum of x[j] over j = l (mod L), in order of j: deterministic, vectorised.
// kind 0: x; 1: |x|; 2: x * y.
template <int KIND, typename T>
inline void lane_accumulate(double* __restrict acc, const T* __restrict x, const T* __restrict y, int64_t n) {
  constexpr int L = LANES<T>;
  constexpr int NV = L / 8;
  VD8 a[NV];
  for (int v = 0; v < NV; ++v) std::memcpy(&a[v], acc + 8 * v, sizeof(VD8));
  int64_t j = 0;
  for (; j + L <= n; j += L) {
    for (int v = 0; v < NV; ++v) {
      const VD8 xv = load_vd8(x + j + 8 * v);
      if constexpr (KIND == 0) a[v] += xv;
      if constexpr (KIND == 1) a[v] += vabs(xv);
      if constexpr (KIND == 2) a[v] += xv * load_vd8(y + j + 8 * v);
    }
  }
  for (int v = 0; v < NV; ++v) std::memcpy(acc + 8 * v, &a[v], sizeof(VD8));
  for (int l = 0; j + l < n; ++l) {
    const double xv = static_cast<double>(x[j + l]);
    if constexpr (KIND == 0) acc[l] += xv;
    if constexpr (KIND == 1) acc[l] += std::fabs(xv);
    if constexpr (KIND == 2) acc[l] += xv * static_cast<double>(y[j + l]);
  }
}

// acc[l] += x[j] * y[j] and acc2[l] += x[j] over j = l (mod L), in one pass.
template <typename T>
inline void lane_dot_and_sum(double* __restrict acc, double* __restrict acc2, const T* __restrict x,
                             const T* __restrict y, int64_t n) {
  constexpr int L = LANES<T>;
  constexpr int NV = L / 8;
  VD8 a[NV], b[NV];
  for (int v = 0; v < NV; ++v) {
    std::memcpy(&a[v], acc + 8 * v, sizeof(VD8));
    std::memcpy(&b[v], acc2 + 8 * v, sizeof(VD8));
  }
  int64_t j = 0;
  for (; j + L <= n; j += L) {
    for (int v = 0; v < NV; ++v) {
      const VD8 xv = load_vd8(x + j + 8 * v);
      a[v] += xv * load_vd8(y + j + 8 * v);
      b[v] += xv;
    }
  }
  for (int v = 0; v < NV; ++v) {
    std::memcpy(acc + 8 * v, &a[v], sizeof(VD8));
    std::memcpy(acc2 + 8 * v, &b[v], sizeof(VD8));
  }
  for (int l = 0; j + l < n; ++l) {
    const double xv = static_cast<double>(x[j + l]);
    acc[l] += xv * static_cast<double>(y[j + l]);
    acc2[l] += xv;
  }
}

// acc[l] += x[j] and acc_abs[l] += |x[j]| over j = l (mod L), in one pass.
template <typename T>
inline void lane_add_and_abs(double* __restrict acc, double* __restrict acc_abs, const T* __restrict x, int64_t n) {
  constexpr int L = LANES<T>;
  constexpr int NV = L / 8;
  VD8 a[NV], b[NV];
  for (int v = 0; v < NV; ++v) {
    std::memcpy(&a[v], acc + 8 * v, sizeof(VD8));
    std::memcpy(&b[v], acc_abs + 8 * v, sizeof(VD8));
  }
  int64_t j = 0;
  for (; j + L <= n; j += L) {
    for (int v = 0; v < NV; ++v) {
      const VD8 xv = load_vd8(x + j + 8 * v);
      a[v] += xv;
      b[v] += vabs(xv);
    }
  }
  for (int v = 0; v < NV; ++v) {
    std::memcpy(acc + 8 * v, &a[v], sizeof(VD8));
    std::memcpy(acc_abs + 8 * v, &b[v], sizeof(VD8));
  }
  for (int l = 0; j + l < n; ++l) {
    const double xv = static_cast<double>(x[j + l]);
    acc[l] += xv;
    acc_abs[l] += std::fabs(xv);
  }
}

template <typename T>
inline void lane_add(double* __restrict acc, const T* __restrict x, int64_t n) {
  lane_accumulate<0, T>(acc, x, nullptr, n);
}

template <typename T>
inline void lane_add_abs(double* __restrict acc, const T* __restrict x, int64_t n) {
  lane_accumulate<1, T>(acc, x, nullptr, n);
}

template <typename T>
inline void lane_dot(double* __restrict acc, const T* __restrict x, const T* __restrict y, int64_t n) {
  lane_accumulate<2, T>(acc, x, y, n);
}

template <typename T>
inline double lane_total(const double* acc) {
  if constexpr (LANES<T> == 8) {
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  } else {
    double h[8];
    for (int l = 0; l < 8; ++l) h[l] = acc[l] + acc[l + 8];
    return ((h[0] + h[4]) + (h[1] + h[5])) + ((h[2] + h[6]) + (h[3] + h[7]));
  }
}

// Max of x[0..n): LANES-wide vector body (GCC vector extensions: plain loops do not vectorise a
// floating-point max), scalar tail.
template <typename T>
inline T row_max(const T* __restrict x, int64_t n) {
  constexpr int L = LANES<T>;
  typedef T V __attribute__((vector_size(L * sizeof(T))));
  V acc;
  for (int l = 0; l < L; ++l) acc[l] = x[0];
  int64_t j = 0;
  for (; j + L <= n; j += L) {
    V v;
    std::memcpy(&v, x + j, sizeof(V));
    acc = v > acc ? v : acc;
  }
  T m = acc[0];
  for (int l = 1; l < L; ++l) m = acc[l] > m ? acc[l] : m;
  for (; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

// Rows shorter than CHUNK are processed BLOCK_ELEMS elements at a time: R = rows_per_block rows,
// each padded to a multiple of LANES (so every row starts on a 64-byte boundary), form one chunk,
// and each instruction runs one loop over all of them: the per-instruction and per-loop overhead
// is paid once per block instead of once per row. The chunk length R * padded_c is a multiple of
// LANES, so every element of a row takes the same (SIMD) path whatever the block holds, and blocks
// start at absolute row indices that are multiples of R (parallel_rows hands out whole blocks), so
// results do not depend on the thread count. Rows of CHUNK classes or more are cut into CHUNK-class
// chunks (one row per block).
constexpr int64_t BLOCK_ELEMS = 512;

template <typename T>
inline int64_t rows_per_block(int64_t c) {
  if (c >= CHUNK) return 1;
  return std::max<int64_t>(1, BLOCK_ELEMS / round_lanes<T>(c));
}

template <typename T>
struct Workspace {
  AlignedBuf<T> raw_, val_, adj_, prow_, gprow_, trow_, zbuf_, lrow_, ybuf_, zeros_, tleaf_;
  AlignedBuf<double> ebuf_, acc_, rowd_, rowv_;
  std::vector<const T*> vptr;
  T *raw, *val, *adj, *prow, *gprow, *trow, *zbuf, *lrow, *ybuf, *zeros, *tleaf;
  double *ebuf, *acc, *rowd, *rowv;
  int64_t stride = 0;  // per-instruction chunk stride (a multiple of LANES<T>)
  int64_t row_stride = 0, row_len = 0;  // a chunk's rows: row_len classes every row_stride elements
  int64_t tstride = 0;  // stride of the target-class leaf arrays in tleaf
  size_t zeros_n = 0;
  void reserve(size_t n_instr, int64_t c, int64_t rows, bool whole_rows) {
    const int64_t cp = round_lanes<T>(c);
    stride = rows > 1 ? rows * cp : (whole_rows ? cp : round_lanes<T>(std::min<int64_t>(c, CHUNK)));
    row_stride = cp;
    row_len = c;
    const size_t cs = static_cast<size_t>(rows * cp);
    raw = raw_.get(n_instr * stride);
    val = val_.get(n_instr * stride);
    adj = adj_.get(n_instr * stride);
    vptr.resize(n_instr);
    prow = prow_.get(cs);
    gprow = gprow_.get(cs);
    trow = trow_.get(cs);
    zbuf = zbuf_.get(cs);
    lrow = lrow_.get(cs);
    ybuf = ybuf_.get(cs);
    zeros = zeros_.get(cs);
    if (zeros_n < cs) {
      std::fill(zeros, zeros + cs, T(0));
      zeros_n = cs;
    }
    tstride = round_lanes<T>(rows);
    tleaf = tleaf_.get(static_cast<size_t>(3 * tstride));
    ebuf = ebuf_.get(cs);
    acc = acc_.get(static_cast<size_t>(rows) * 3 * LANES<T>);
    rowd = rowd_.get(static_cast<size_t>(rows) * ROWD);
    rowv = rowv_.get(static_cast<size_t>(rows) * 3);
  }
  static constexpr int ROWD = 8;  // per-row scalars, see run_rows
};

struct Batch {
  const void* z;
  int z_dtype;
  const void* target;
  int target_kind;
  int64_t n, c;
  const double* consts;
  double* loss;  // per-row loss, in double whatever the logits' dtype (rounded once, in Python)
  void* grad;
  double grad_scale;  // the gradient is written times this (1/N for a mean over samples)
};

template <typename S, typename T>
inline void load_row(const S* __restrict src, T* __restrict dst, int64_t c) {
  for (int64_t j = 0; j < c; ++j) dst[j] = static_cast<T>(src[j]);
}

// Leaf values of one chunk: n elements each (null where the program has no such leaf).
template <typename T>
struct Leaves {
  const T* y = nullptr;
  const T* p = nullptr;
  const T* z = nullptr;
  const T* logp = nullptr;
};

// Forward over n elements (n <= w.stride); leaves w.vptr set; returns the root's (clamped) values.
template <typename T>
const T* forward_program(const Program& prog, Workspace<T>& w, int n, const Leaves<T>& in, T cval,
                         const double* consts) {
  const int64_t stride = w.stride;
  for (size_t k = 0; k < prog.size(); ++k) {
    const int o = prog.op[k];
    T* rk = w.raw + k * stride;
    const T* vk = rk;
    switch (o) {
      case L_Y:
        vk = in.y;
        break;
      case L_P:
        vk = in.p;
        break;
      case L_Z:
        vk = in.z;
        break;
      case L_LOGP:
        vk = in.logp;
        break;
      case L_C:
        std::fill(rk, rk + n, cval);
        break;
      case L_NUM:
        std::fill(rk, rk + n, static_cast<T>(prog.value[k]));
        break;
      case L_CONST:
        std::fill(rk, rk + n, static_cast<T>(consts[prog.const_index[k]]));
        break;
      default: {
        const T* x0 = w.vptr[prog.a0[k]];
        const T* x1 = prog.a1[k] >= 0 ? w.vptr[prog.a1[k]] : x0;
        T* vv = w.val + k * stride;
        if (OP_OVER_CLASSES[o])
          forward_rows<T>(o, n, w.row_stride, w.row_len, x0, rk, vv);
        else
          forward<T>(o, n, x0, x1, rk, vv);  // vv: the clamped value, for ops that are not bounded
        if (!OP_BOUNDED[o]) vk = vv;
      }
    }
    w.vptr[k] = vk;
  }
  return w.vptr[prog.size() - 1];
}

// Reverse mode over the n elements of the preceding forward_program. The root's adjoint is root_adj,
// except at the n_skip positions skip[] where it is 0 (so nothing flows from them). The leaves'
// adjoints, clamped to +-MAXV, are left at w.adj + leaf_slot * stride.
template <typename T>
void reverse_program(const Program& prog, Workspace<T>& w, int n, T root_adj, const int* skip, int n_skip) {
  const int64_t stride = w.stride;
  const size_t ni = prog.size();
  for (size_t k = 0; k < ni; ++k)
    if (prog.needs_grad[k]) std::fill(w.adj + k * stride, w.adj + k * stride + n, T(0));
  T* groot = w.adj + (ni - 1) * stride;
  std::fill(groot, groot + n, root_adj);
  for (int s = 0; s < n_skip; ++s) groot[skip[s]] = T(0);
  for (size_t kk = ni; kk-- > 0;) {
    if (!prog.needs_grad[kk]) continue;
    T* __restrict g = w.adj + kk * stride;
    const int o = prog.op[kk];
    if (o < N_LEAF) {  // p, z or logp
      for (int i = 0; i < n; ++i) g[i] = nl_clamp_maxv(g[i]);
      continue;
    }
    const int i0 = prog.a0[kk], i1 = prog.a1[kk] >= 0 ? prog.a1[kk] : prog.a0[kk];
    if (OP_OVER_CLASSES[o]) {
      backward_rows<T>(o, n, w.row_stride, w.row_len, w.vptr[i0], w.raw + kk * stride, g,
                       w.adj + static_cast<size_t>(i0) * stride);
      continue;
    }
    // a unary op's gb is unused by the generated code
    backward<T>(o, n, w.vptr[i0], w.vptr[i1], w.raw + kk * stride, g, w.adj + static_cast<size_t>(i0) * stride,
                w.adj + static_cast<size_t>(i1) * stride);
  }
}

template <typename T>
inline const T* leaf_adjoint(const Program& prog, const Workspace<T>& w, int leaf) {
  return prog.leaf_grad(leaf) ? w.adj + static_cast<size_t>(prog.leaf_slot[leaf]) * w.stride : nullptr;
}

// One pass over rows [r0, r1) computing the loss rows and d loss / d z.
//
// mp is evaluated at every class. With class-index targets, tp is the loss specialised to the
// target class (y = 1) and mp the loss specialised to the other classes (y = 0; see
// nlfs/expr/_specialize.py): mp's element at the target class is skipped (value and adjoint) and
// tp is evaluated at each row's target class only. When mp is then a constant (cross-entropy,
// focal, poly-1: 0 off the target), nothing runs per element but the softmax and the gradient,
// which is -p_j * K off the target.
//
// T: the compute type. Float64 logits compute in double. Float32 logits compute in float (twice
// the SIMD lanes, libmvec's float clones) when fp32 compute is on, with softmax and log-softmax
// evaluated in double and rounded once, and the row sums (softmax normaliser, loss, sum p*g_p,
// sum g_logp) and the final gradient combination in double; otherwise in double.
// Returns the number of rows recomputed in double (float path only).
template <typename TZ, typename T>
int64_t run_rows(const Program& mp, const Program* tp, const Batch& b, int64_t r0, int64_t r1) {
  constexpr int L = LANES<T>;
  constexpr int RD = Workspace<T>::ROWD;
  thread_local Workspace<T> tls_workspace;
  Workspace<T>& w = tls_workspace;
  const int64_t c = b.c;
  const int64_t R = rows_per_block<T>(c);
  const int64_t cp = round_lanes<T>(c);
  if (tp && tp->over_classes) throw std::logic_error("a target-specialised program cannot sum over classes");
  w.reserve(std::max(mp.size(), tp ? tp->size() : size_t(0)), c, R, mp.over_classes);
  // a program over classes sees whole rows: one long row per chunk, or a block of short ones
  const int64_t chunk = R > 1 ? R * cp : (mp.over_classes ? c : std::min<int64_t>(c, CHUNK));
  const int64_t* tidx = b.target_kind == T_INDEX_I64 ? static_cast<const int64_t*>(b.target) : nullptr;
  if (tp && !tidx) throw std::logic_error("target-class program without class-index targets");
  // mp reads no leaf: one value for every element, evaluated once
  const bool m_const = mp.is_uniform();
  const bool fast = tp && m_const;
  const bool softmax = mp.use_p || mp.use_logp || (tp && (tp->use_p || tp->use_logp));
  const bool m_grad = !m_const && mp.root_grad();
  const bool m_has_gp = m_grad && mp.leaf_grad(L_P);
  const bool m_has_gz = m_grad && mp.leaf_grad(L_Z);
  const bool m_has_gl = m_grad && mp.leaf_grad(L_LOGP);
  const bool t_grad = tp && tp->root_grad();
  const bool has_gp = m_has_gp || (t_grad && tp->use_p);
  const bool has_t = m_has_gz || m_has_gl || (t_grad && (tp->use_z || tp->use_logp));
  const double cval = static_cast<double>(c);
  const T root_adj = static_cast<T>(mp.reduction == 1 ? 1.0 / cval : 1.0);
  const double scale = b.grad_scale;
  T* __restrict zrow = w.zbuf;
  T* __restrict prow = w.prow;
  T* __restrict gprow = w.gprow;
  T* __restrict trow = w.trow;
  T* __restrict lrow = w.lrow;
  double* __restrict loss_acc = w.acc;              // R x L
  double* __restrict logp_acc = w.acc + R * L;      // R x L
  double* __restrict labs_acc = w.acc + 2 * R * L;  // R x L: sum |f| (float path only)
  double* __restrict rowd = w.rowd;  // per row: 1/sum exp, log-sum-exp, tp's g_p, g_z + g_logp, g_logp
  double* __restrict rowsum = w.rowv;  // per row: sum exp(z - max), max, log(sum)
  double* __restrict rowmax = w.rowv + R;
  double* __restrict rowlog = w.rowv + 2 * R;
  const double noise_ulps = g_fp32_noise_ulps.load();
  int64_t n_redo = 0;

  double k0 = 0.0;  // mp's value when it is constant
  if (m_const) k0 = static_cast<double>(forward_program(mp, w, 1, Leaves<T>{}, static_cast<T>(cval), b.consts)[0]);
  const double k0_count = tp ? cval - 1.0 : cval;

  for (int64_t rb = r0; rb < r1; rb += R) {
    const int64_t nr = std::min<int64_t>(R, r1 - rb);
    const int64_t span = R > 1 ? nr * cp : c;  // elements of the block's row buffers in use
    // ---- per-row prologue: logits, softmax, log-softmax (padding: 0, 0, -shift). The exp loops
    // run over the padded row (no scalar tail); the padding is zeroed after.
    for (int64_t q = 0; q < nr; ++q) {
      const int64_t r = rb + q;
      T* zq = zrow + q * cp;
      load_row(static_cast<const TZ*>(b.z) + r * c, zq, c);
      for (int64_t j = c; j < cp; ++j) zq[j] = T(0);
      if (!softmax) continue;
      T* pq = prow + q * cp;
      const T mx = row_max(zq, c);
      double acc[L] = {0.0};
      if (fast || sizeof(T) == 8) {
        // exp(z - max) in T: the fast path needs p only as p_j * K, to T's own accuracy
        for (int64_t j = 0; j < cp; ++j) pq[j] = std::exp(zq[j] - mx);
        lane_add(acc, pq, c);
      } else {
        // float32, general path: softmax in double, rounded once to float. The gradient through
        // p amplifies p's relative error by up to sum(p |g_p|) / |dz| (Baikal with probability
        // targets: 1e3), so p must be as good as PyTorch's.
        double* __restrict e = w.ebuf + q * cp;
        const double mxd = static_cast<double>(mx);
        for (int64_t j = 0; j < cp; ++j) e[j] = std::exp(static_cast<double>(zq[j]) - mxd);
        lane_add(acc, e, c);
      }
      rowsum[q] = lane_total<T>(acc);
      rowmax[q] = static_cast<double>(mx);
    }
    if (softmax) {
      // one vectorised log for the block's rows
      for (int64_t q = 0; q < nr; ++q) rowlog[q] = std::log(rowsum[q]);
      for (int64_t q = 0; q < nr; ++q) {
        const double inv = 1.0 / rowsum[q], shift = rowmax[q] + rowlog[q];
        rowd[q * RD + 0] = inv;
        rowd[q * RD + 1] = shift;
        T* pq = prow + q * cp;
        if (!fast) {  // p itself (the fast path keeps exp(z - max) and scales by 1/sum where it reads it)
          if constexpr (sizeof(T) == 8) {
            for (int64_t j = 0; j < c; ++j) pq[j] *= inv;
          } else {
            const double* __restrict e = w.ebuf + q * cp;
            for (int64_t j = 0; j < c; ++j) pq[j] = static_cast<T>(e[j] * inv);
          }
        }
        for (int64_t j = c; j < cp; ++j) pq[j] = T(0);
        if (mp.use_logp) {
          const T* zq = zrow + q * cp;
          T* lq = lrow + q * cp;
          if constexpr (sizeof(T) == 8) {
            for (int64_t j = 0; j < cp; ++j) lq[j] = zq[j] - shift;
          } else {
            for (int64_t j = 0; j < cp; ++j) lq[j] = static_cast<T>(static_cast<double>(zq[j]) - shift);
          }
        }
      }
    }
    if (mp.use_y) {  // the target rows (one-hot or probabilities), zero padded
      for (int64_t q = 0; q < nr; ++q) {
        T* yq = w.ybuf + q * cp;
        if (tidx) {
          std::fill(yq, yq + cp, T(0));
          yq[tidx[rb + q]] = T(1);
        } else {
          const int64_t off = (rb + q) * c;
          if (b.target_kind == T_PROB_F32)
            load_row(static_cast<const float*>(b.target) + off, yq, c);
          else
            load_row(static_cast<const double*>(b.target) + off, yq, c);
          std::fill(yq + c, yq + cp, T(0));
        }
      }
    }
    if (has_gp && !m_has_gp) std::fill(gprow, gprow + span, T(0));
    if (has_t && !m_has_gz && !m_has_gl) std::fill(trow, trow + span, T(0));
    std::fill(loss_acc, loss_acc + 3 * R * L, 0.0);

    // ---- mp at every class
    for (int64_t c0 = 0; !m_const && c0 < span; c0 += chunk) {
      const int n = static_cast<int>(std::min<int64_t>(chunk, span - c0));
      Leaves<T> in;
      in.y = w.ybuf + c0;
      in.p = prow + c0;
      in.z = zrow + c0;
      in.logp = lrow + c0;
      const T* root = forward_program(mp, w, n, in, static_cast<T>(cval), b.consts);
      int skip[BLOCK_ELEMS / 8];  // the target classes in this chunk (at most one per row)
      int n_skip = 0;
      if (tp) {
        for (int64_t q = 0; q < nr; ++q) {
          const int64_t pos = R > 1 ? q * cp + tidx[rb + q] : tidx[rb + q] - c0;
          if (pos >= 0 && pos < n) skip[n_skip++] = static_cast<int>(pos);
        }
      }
      // the root's values at the skipped elements are zeroed for the sums and restored after (the
      // root may be a leaf row that the epilogue reads; every buffer here is the workspace's own)
      T* root_w = const_cast<T*>(root);
      T saved[BLOCK_ELEMS / 8];
      for (int s = 0; s < n_skip; ++s) {
        saved[s] = root_w[skip[s]];
        root_w[skip[s]] = T(0);
      }
      if constexpr (sizeof(T) == 4) {
        if (R > 1) {
          for (int64_t q = 0; q < nr; ++q) lane_add_and_abs(loss_acc + q * L, labs_acc + q * L, root + q * cp, c);
        } else {
          lane_add_and_abs(loss_acc, labs_acc, root, n);
        }
      } else {
        if (R > 1) {
          for (int64_t q = 0; q < nr; ++q) lane_add(loss_acc + q * L, root + q * cp, c);
        } else {
          lane_add(loss_acc, root, n);
        }
      }
      for (int s = 0; s < n_skip; ++s) root_w[skip[s]] = saved[s];
      if (!m_grad) continue;
      reverse_program(mp, w, n, root_adj, skip, n_skip);
      const T* gP = leaf_adjoint(mp, w, L_P);
      const T* gZ = leaf_adjoint(mp, w, L_Z);
      const T* gL = leaf_adjoint(mp, w, L_LOGP);
      if (gP) std::copy(gP, gP + n, gprow + c0);
      if (gZ && gL) {
        for (int i = 0; i < n; ++i) trow[c0 + i] = gL[i] + gZ[i];
      } else if (gZ || gL) {
        std::copy(gZ ? gZ : gL, (gZ ? gZ : gL) + n, trow + c0);
      }
      if (gL) {
        if (R > 1) {
          for (int64_t q = 0; q < nr; ++q) lane_add(logp_acc + q * L, gL + q * cp, c);
        } else {
          lane_add(logp_acc, gL, n);
        }
      }
    }

    // ---- tp at each row's target class
    if (tp) {
      T* tP = w.tleaf;
      T* tZ = tP + w.tstride;
      T* tLg = tZ + w.tstride;
      for (int64_t q = 0; q < nr; ++q) {
        const int64_t t = tidx[rb + q];
        tZ[q] = zrow[q * cp + t];
        if (!softmax) continue;
        tP[q] = fast ? static_cast<T>(static_cast<double>(prow[q * cp + t]) * rowd[q * RD + 0]) : prow[q * cp + t];
        tLg[q] = static_cast<T>(static_cast<double>(zrow[q * cp + t]) - rowd[q * RD + 1]);
      }
      // padded to whole SIMD vectors, so that a row's result never depends on whether its target
      // fell in a vector body or a scalar tail (libmvec and libm may round differently)
      const int n = static_cast<int>(round_lanes<T>(nr));
      for (int64_t q = nr; q < n; ++q) tP[q] = tZ[q] = tLg[q] = T(0);
      Leaves<T> in;
      in.p = tP;
      in.z = tZ;
      in.logp = tLg;
      const T* v = forward_program(*tp, w, n, in, static_cast<T>(cval), b.consts);
      for (int64_t q = 0; q < nr; ++q) {
        loss_acc[q * L] += static_cast<double>(v[q]);
        if constexpr (sizeof(T) == 4) labs_acc[q * L] += std::fabs(static_cast<double>(v[q]));
      }
      const T* gP = nullptr;
      const T* gZ = nullptr;
      const T* gL = nullptr;
      if (t_grad) {
        reverse_program(*tp, w, n, root_adj, nullptr, 0);
        gP = leaf_adjoint(*tp, w, L_P);
        gZ = leaf_adjoint(*tp, w, L_Z);
        gL = leaf_adjoint(*tp, w, L_LOGP);
      }
      for (int64_t q = 0; q < nr; ++q) {
        const double gp = gP ? static_cast<double>(gP[q]) : 0.0;
        const double gl = gL ? static_cast<double>(gL[q]) : 0.0;
        const double gt = (gL ? gL[q] : T(0)) + (gZ ? gZ[q] : T(0));
        rowd[q * RD + 2] = gp;
        rowd[q * RD + 3] = gt;
        rowd[q * RD + 4] = gl;
        if (!fast) {
          const int64_t pos = q * cp + tidx[rb + q];
          if (gP) gprow[pos] += gP[q];
          if (gZ || gL) trow[pos] += static_cast<T>(gt);
          logp_acc[q * L] += gl;
        }
      }
    }

    // ---- per-row epilogue: loss and the gradient through the softmax Jacobians
    for (int64_t q = 0; q < nr; ++q) {
      const int64_t r = rb + q;
      const double loss_sum = lane_total<T>(loss_acc + q * L) + k0_count * k0;
      b.loss[r] = mp.reduction == 1 ? loss_sum / cval : loss_sum;
      TZ* __restrict dst = static_cast<TZ*>(b.grad) + r * c;
      bool redo = false;
      if constexpr (sizeof(T) == 4) {
        // the class sum cancels (sum |f| >> |loss|): the float terms' noise may exceed 1e-6
        const double labs = lane_total<T>(labs_acc + q * L) + k0_count * std::fabs(k0);
        redo = noise_ulps * 0x1p-24 * labs > FP32_TOL * (1.0 + std::fabs(loss_sum));
      }
      if (fast) {
        const int64_t t = tidx[r];
        const double gp = rowd[q * RD + 2], gt = rowd[q * RD + 3], gl = rowd[q * RD + 4];
        if (!softmax) {
          std::fill(dst, dst + c, static_cast<TZ>(0));
          dst[t] = static_cast<TZ>(gt * scale);
        } else {
          // off the target, g_p = g_z = g_logp = 0: dz_j = p_j (0 - sp) - p_j sl = -p_j K
          const double inv = rowd[q * RD + 0];
          const T* __restrict eq = prow + q * cp;  // exp(z - max)
          const double pt = static_cast<double>(eq[t]) * inv;
          const double sp = pt * gp, sl = gl, K = sp + sl;
          const double m = -K * inv * scale;
          for (int64_t j = 0; j < c; ++j) dst[j] = static_cast<TZ>(static_cast<double>(eq[j]) * m);
          const double dzt = pt * (gp - sp) + gt - pt * sl;
          dst[t] = static_cast<TZ>(dzt * scale);
          if constexpr (sizeof(T) == 4) {
            // the float adjoints' rounding noise (as below), at the target and at the largest p
            // off it (the bound is linear in p_j; the largest p_j is 1/sum exp)
            const double k = noise_ulps * 0x1p-24, common = std::fabs(sp) + std::fabs(sl);
            redo = redo || k * (pt * (std::fabs(gp) + common) + std::fabs(gt)) > FP32_TOL * (1.0 + std::fabs(dzt)) ||
                   k * inv * common > FP32_TOL * (1.0 + inv * std::fabs(K));
          }
        }
      } else if (softmax) {
        const T* pq = prow + q * cp;
        const T* gq = has_gp ? gprow + q * cp : w.zeros;
        const T* tq = has_t ? trow + q * cp : w.zeros;
        double acc[L] = {0.0}, pacc[L] = {0.0};
        if (has_gp) {
          if constexpr (sizeof(T) == 4) {
            lane_dot_and_sum(acc, pacc, pq, gq, c);
          } else {
            lane_dot(acc, pq, gq, c);
          }
        }
        double sp = lane_total<T>(acc);
        const double sl = lane_total<T>(logp_acc + q * L);
        if constexpr (sizeof(T) == 4) {
          // float p is normalised only to ~1 ulp: use sum(p g_p) / sum(p), so that g_p - sp
          // vanishes exactly where g_p is constant along the row (d/dz of f(sum p) is 0).
          if (has_gp) sp /= lane_total<T>(pacc);
        }
        if constexpr (sizeof(T) == 8) {
          for (int64_t j = 0; j < c; ++j) {
            const double pj = static_cast<double>(pq[j]);
            dst[j] = static_cast<TZ>((pj * (static_cast<double>(gq[j]) - sp) + static_cast<double>(tq[j]) - pj * sl) *
                                     scale);
          }
        } else {
          // One pass: the gradient (in double, rounded once) and the rounding noise of the float
          // adjoints (noise_ulps ulp of each term) against 1e-6 abs + rel, 8 lanes at a time
          // (GCC vector extensions: as a plain loop, the check keeps it from vectorising).
          const double k = noise_ulps * 0x1p-24, common = std::fabs(sp) + std::fabs(sl);
          const VD8 spv = splat(sp), slv = splat(sl), kv = splat(k), cv = splat(common), scv = splat(scale);
          const VD8 tolv = splat(FP32_TOL), one = splat(1.0);
          VL8 flagv = {};
          int64_t j = 0;
          for (; j + 8 <= c; j += 8) {
            const VD8 pj = load_vd8(pq + j), gj = load_vd8(gq + j), tj = load_vd8(tq + j);
            const VD8 ej = pj * (gj - spv) + tj - pj * slv;
            store_vd8(dst + j, ej * scv);
            const VD8 noise = kv * (pj * (vabs(gj) + cv) + vabs(tj));
            flagv |= noise > tolv * (one + vabs(ej));
          }
          int flag = 0;
          for (int l = 0; l < 8; ++l) flag |= flagv[l] != 0;
          for (; j < c; ++j) {
            const double pj = static_cast<double>(pq[j]), gj = static_cast<double>(gq[j]);
            const double tj = static_cast<double>(tq[j]);
            const double ej = pj * (gj - sp) + tj - pj * sl;
            dst[j] = static_cast<TZ>(ej * scale);
            const double noise = k * (pj * (std::fabs(gj) + common) + std::fabs(tj));
            flag |= static_cast<int>(noise > FP32_TOL * (1.0 + std::fabs(ej)));
          }
          redo = redo || flag != 0;
        }
      } else if (has_t) {
        const T* tq = trow + q * cp;
        for (int64_t j = 0; j < c; ++j) dst[j] = static_cast<TZ>(static_cast<double>(tq[j]) * scale);
      } else {
        std::fill(dst, dst + c, static_cast<TZ>(0));
      }
      if constexpr (sizeof(T) == 4) {
        // Ill-conditioned row (the softmax Jacobian or the class sum cancels large terms: Baikal
        // with probability targets, 1/(y - p), sin(40 p)...): float cannot promise ~1e-6, so the
        // row is recomputed in double. The decision depends only on the row: thread-independent.
        if (redo) {
          ++n_redo;
          run_rows<TZ, double>(mp, tp, b, r, r + 1);
        }
      }
    }
  }
  if (n_redo) g_fp32_redo_rows.fetch_add(n_redo, std::memory_order_relaxed);
  return n_redo;
}

std::atomic<bool> g_fp32_compute{FP32_COMPUTE_DEFAULT};

void run_batch(const Program& mp, const Program* tp, const Batch& b, int threads) {
  if (b.n == 0 || b.c == 0) return;
  // Small batches run on the calling thread: waking workers costs more than it saves.
  const double per_elem = mp.is_uniform() ? 4.0 : static_cast<double>(mp.size());
  const double work = static_cast<double>(b.n) * (static_cast<double>(b.c) * per_elem +
                                                  (tp ? 8.0 * static_cast<double>(tp->size()) : 0.0));
  if (work < 40000.0) threads = 1;
  const bool f32 = b.z_dtype == D_F32;
  // a program over classes computes in double: the float path's noise estimate does not see the row sums
  // inside the program
  bool f32c = f32 && g_fp32_compute.load() && b.c >= FP32_MIN_CLASSES && !mp.over_classes;
  int64_t start = 0;
  if (f32c) {
    // Probe: the first rows (whole blocks, at least 8 rows) in float. When most of them had to be
    // recomputed in double (an ill-conditioned loss: Baikal, SCE), the rest of the batch computes
    // in double directly. The probe's rows are fixed, so the choice (and every result) does not
    // depend on the thread count.
    // a multiple of both block sizes, so that the blocks after it start at absolute multiples
    const int64_t R = std::lcm(rows_per_block<float>(b.c), rows_per_block<double>(b.c));
    start = std::min<int64_t>(b.n, (8 + R - 1) / R * R);
    const int64_t redo = run_rows<float, float>(mp, tp, b, 0, start);
    if (2 * redo > start) f32c = false;
  }
  const int64_t align = f32c ? rows_per_block<float>(b.c) : rows_per_block<double>(b.c);
  auto body = [&](int64_t r0, int64_t r1) {
    r0 += start;
    r1 += start;
    if (f32c)
      run_rows<float, float>(mp, tp, b, r0, r1);
    else if (f32)
      run_rows<float, double>(mp, tp, b, r0, r1);
    else
      run_rows<double, double>(mp, tp, b, r0, r1);
  };
  if (b.n > start) parallel_rows(b.n - start, threads, align, body);
}

void check_batch(const Program& prog, int z_dtype, int target_kind, int64_t n, int64_t c, int64_t n_consts) {
  if (z_dtype != D_F32 && z_dtype != D_F64) throw std::invalid_argument("logits dtype code must be 0 (f32) or 1 (f64)");
  if (target_kind < 0 || target_kind > 2) throw std::invalid_argument("target kind must be 0, 1 or 2");
  if (n < 0 || c < 0) throw std::invalid_argument("negative batch shape");
  if (n > 0 && c < 1) throw std::invalid_argument("logits need at least one class column");
  if (n_consts < prog.n_consts)
    throw std::invalid_argument("program needs " + std::to_string(prog.n_consts) + " constants, got " +
                                std::to_string(n_consts));
}

// ------------------------------------------------------------------------------------------------
// Python bindings

using Arr = py::array_t<double, py::array::c_style | py::array::forcecast>;

Arr op_eval(int op, Arr a, Arr b, bool want_partials, int which) {
  if (op < N_LEAF || op >= N_OPCODES || OP_OVER_CLASSES[op])
    throw std::invalid_argument("opcode is not an elementwise table op");
  const py::ssize_t n = a.size();
  if (b.size() != n) throw std::invalid_argument("a and b differ in size");
  Arr out(n), pa(n), pb(n);
  {
    py::gil_scoped_release nogil;
    const double* ap = a.data();
    const double* bp = b.data();
    double* o = out.mutable_data();
    std::vector<double> clamped(CHUNK);
    for (py::ssize_t s = 0; s < n; s += CHUNK) {
      const int m = static_cast<int>(std::min<py::ssize_t>(CHUNK, n - s));
      forward<double>(op, m, ap + s, bp + s, o + s, clamped.data());
      if (want_partials) partials<double>(op, m, ap + s, bp + s, o + s, pa.mutable_data() + s, pb.mutable_data() + s);
    }
  }
  if (!want_partials) return out;
  return which == 0 ? pa : pb;
}

}  // namespace

PYBIND11_MODULE(_cpp, m) {
  m.doc() = "nlfs C++ CPU evaluator of lowered loss programs (see nlfs.backends._cpp)";
  m.attr("TABLE_DIGEST") = TABLE_DIGEST;
  m.attr("N_LEAF") = N_LEAF;
  m.attr("MAXV") = MAXV;
  m.attr("CHUNK") = CHUNK;

  py::class_<Program>(m, "Program")
      .def(py::init<std::vector<int>, std::vector<int>, std::vector<int>, std::vector<double>, int, int>(),
           py::arg("ops"), py::arg("args0"), py::arg("args1"), py::arg("values"), py::arg("n_consts"),
           py::arg("reduction"),
           "Validate and store an instruction list; raises ValueError when it is malformed.")
      .def("__len__", &Program::size)
      .def_readonly("n_consts", &Program::n_consts)
      .def_readonly("reduction", &Program::reduction);

  m.def(
      "run",
      [](const Program& prog, uintptr_t z, int z_dtype, uintptr_t target, int target_kind, int64_t n, int64_t c,
         uintptr_t consts, int64_t n_consts, uintptr_t loss, uintptr_t grad, const Program* off, const Program* on,
         double grad_scale, uintptr_t total, double total_scale, int64_t ignore_index, bool mean_over_kept) {
        check_batch(prog, z_dtype, target_kind, n, c, n_consts);
        if ((off == nullptr) != (on == nullptr)) throw std::invalid_argument("give both off and on, or neither");
        if (n > 0 && (!z || !target || !loss || !grad || (prog.n_consts > 0 && !consts)))
          throw std::invalid_argument("null buffer address");
        if (!std::isfinite(grad_scale) || !std::isfinite(total_scale))
          throw std::invalid_argument("grad_scale and total_scale must be finite");
        const bool split = off != nullptr && target_kind == T_INDEX_I64;
        if (off != nullptr) {
          for (const Program* q : {off, on}) {
            if (q->use_y) throw std::invalid_argument("the off/on (target-specialised) programs must not read y");
            if (q->over_classes || prog.over_classes)
              throw std::invalid_argument("a program over classes cannot be split into off/on programs");
            if (q->reduction != prog.reduction) throw std::invalid_argument("off/on programs differ in reduction");
            if (q->n_consts > n_consts)
              throw std::invalid_argument("program needs " + std::to_string(q->n_consts) + " constants, got " +
                                          std::to_string(n_consts));
          }
        }
        // Rows whose target is ignore_index are evaluated against class 0 (a copy of the targets, made
        // only when one occurs), then zeroed and left out of the mean: the common case pays one scan.
        std::vector<int64_t> t_kept, ignored;
        int64_t n_ignored = 0;
        if (target_kind == T_INDEX_I64 && n > 0) {
          const int64_t* t = reinterpret_cast<const int64_t*>(target);
          for (int64_t i = 0; i < n; ++i) {
            if (t[i] == ignore_index) {
              if (n_ignored++ == 0) t_kept.assign(t, t + n);
              t_kept[i] = 0;
              ignored.push_back(i);
            } else if (t[i] < 0 || t[i] >= c) {
              throw std::invalid_argument("target class " + std::to_string(t[i]) + " is out of range for " +
                                          std::to_string(c) + " classes");
            }
          }
          if (n_ignored) target = reinterpret_cast<uintptr_t>(t_kept.data());
        }
        if (mean_over_kept) {  // mean over the rows not ignored; none kept: nan, as torch's mean
          total_scale = n > n_ignored ? 1.0 / static_cast<double>(n - n_ignored) : std::nan("");
          grad_scale = n > n_ignored ? total_scale : 0.0;
        }
        Batch b{reinterpret_cast<const void*>(z), z_dtype, reinterpret_cast<const void*>(target), target_kind, n, c,
                reinterpret_cast<const double*>(consts), reinterpret_cast<double*>(loss),
                reinterpret_cast<void*>(grad), grad_scale};
        const int threads = num_threads();
        py::gil_scoped_release nogil;
        run_batch(split ? *off : prog, split ? on : nullptr, b, threads);
        for (const int64_t i : ignored) {  // no loss, no gradient
          b.loss[i] = 0.0;
          if (z_dtype == D_F32)
            std::fill(static_cast<float*>(b.grad) + i * c, static_cast<float*>(b.grad) + (i + 1) * c, 0.0f);
          else
            std::fill(static_cast<double*>(b.grad) + i * c, static_cast<double*>(b.grad) + (i + 1) * c, 0.0);
        }
        if (total) {
          // the reduced loss, summed in row order (deterministic)
          double s = 0.0;
          for (int64_t i = 0; i < n; ++i) s += b.loss[i];
          // in the logits' precision: the caller gets the loss without a conversion (a tensor op
          // that would cost as much as a small batch's kernel)
          if (z_dtype == D_F32)
            *reinterpret_cast<float*>(total) = static_cast<float>(s * total_scale);
          else
            *reinterpret_cast<double*>(total) = s * total_scale;
        }
      },
      py::arg("program"), py::arg("z"), py::arg("z_dtype"), py::arg("target"), py::arg("target_kind"), py::arg("n"),
      py::arg("c"), py::arg("consts"), py::arg("n_consts"), py::arg("loss"), py::arg("grad"),
      py::arg("off").none(true) = nullptr, py::arg("on").none(true) = nullptr, py::arg("grad_scale") = 1.0,
      py::arg("total") = 0, py::arg("total_scale") = 1.0, py::arg("ignore_index") = -100,
      py::arg("mean_over_kept") = false,
      "Evaluate on contiguous buffers given by address: logits z (N, C) f32/f64, target int64 (N,) "
      "or f32/f64 (N, C), float64 constants; writes float64 loss (N,) and grad (N, C) in z's dtype, "
      "times grad_scale. With class-index targets, off and on (the program with y = 0 and y = 1, "
      "nlfs.expr.specialize) are evaluated instead: off at the other classes, on at the target. "
      "total: the address of a float (f32 logits) or double (f64) that receives total_scale * the sum of the loss rows. Class-index "
      "targets equal to ignore_index give loss 0 and gradient 0; mean_over_kept: grad_scale and "
      "total_scale become 1 / (rows not ignored).");

  m.def("set_num_threads", [](int t) {
    if (t < 1) throw std::invalid_argument("thread count must be >= 1");
    g_threads.store(t);
  });
  m.def("get_num_threads", &num_threads);
  m.def(
      "set_fp32_compute", [](bool on) { g_fp32_compute.store(on); }, py::arg("on"),
      "Compute float32 logits in float (True) or in double (False).");
  m.def("get_fp32_compute", [] { return g_fp32_compute.load(); });
  m.def("_fp32_redo", [](double ulps) {
    // (testing) set the fallback's noise estimate in ulps (< 0: keep); returns and resets the
    // count of rows recomputed in double so far
    if (ulps >= 0) g_fp32_noise_ulps.store(ulps);
    return g_fp32_redo_rows.exchange(0);
  }, py::arg("ulps") = -1.0);
  m.def("op_names", [] { return std::vector<std::string>(OP_NAMES, OP_NAMES + N_OPCODES); });
  m.def("op_arity", [] { return std::vector<int>(OP_ARITY, OP_ARITY + N_OPCODES); });
  m.def("op_bounded", [] { return std::vector<bool>(OP_BOUNDED, OP_BOUNDED + N_OPCODES); });
  m.def(
      "op_forward", [](int op, Arr a, Arr b) { return op_eval(op, a, b, false, 0); }, py::arg("op"), py::arg("a"),
      py::arg("b"), "The generated forward of one table op on float64 arrays (unclamped value).");
  m.def(
      "op_partials",
      [](int op, Arr a, Arr b) { return py::make_tuple(op_eval(op, a, b, true, 0), op_eval(op, a, b, true, 1)); },
      py::arg("op"), py::arg("a"), py::arg("b"), "The generated partial derivatives of one table op.");
  m.def(
      "special",
      [](const std::string& name, Arr x) {
        double (*f)(double);
        if (name == "i0") f = nl_i0;
        else if (name == "i0e") f = nl_i0e;
        else if (name == "i1") f = nl_i1;
        else if (name == "i1e") f = nl_i1e;
        else throw std::invalid_argument("special: unknown function " + name);
        Arr out(x.size());
        const double* xp = x.data();
        double* o = out.mutable_data();
        for (py::ssize_t i = 0; i < x.size(); ++i) o[i] = f(xp[i]);
        return out;
      },
      py::arg("name"), py::arg("x"), "Cephes Bessel function (i0, i0e, i1, i1e) on a float64 array.");
}
