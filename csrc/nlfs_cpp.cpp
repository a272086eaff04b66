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
// No torch headers: buffers come as raw addresses.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
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
  bool use_p = false, use_logp = false, use_y = false;

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
      if (o == L_P) use_p = true;
      if (o == L_LOGP) use_logp = true;
      if (o == L_Y) use_y = true;
      if (o == L_P || o == L_LOGP || o == L_Z) needs_grad[k] = 1;
      for (int j = 0; j < arity; ++j)
        if (needs_grad[args[j]]) needs_grad[k] = 1;
    }
  }
  size_t size() const { return op.size(); }
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

class Pool {
 public:
  explicit Pool(int n_workers) : pid_(getpid()) {
    for (int i = 0; i < n_workers; ++i) workers_.emplace_back([this, i] { loop(i + 1); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
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
      ++generation_;
    }
    cv_.notify_all();
    f(0);
    std::unique_lock<std::mutex> lk(mu_);
    open_ = false;
    done_cv_.wait(lk, [this] { return active_ == 0; });
    job_ = nullptr;
  }

 private:
  void loop(int part) {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int)>* job;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        if (!open_ || part >= parts_) continue;
        job = job_;
        ++active_;
      }
      (*job)(part);
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (--active_ == 0) done_cv_.notify_one();
      }
    }
  }

  pid_t pid_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int)>* job_ = nullptr;
  int parts_ = 0, active_ = 0;
  bool open_ = false;
  uint64_t generation_ = 0;
  bool stop_ = false;
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

// acc[l] += sum of x[j] over j = l (mod L); SLP-vectorised, the order is fixed by the position.
template <typename T>
inline void lane_add(double* __restrict acc, const T* __restrict x, int64_t n) {
  constexpr int L = LANES<T>;
  int64_t j = 0;
  for (; j + L <= n; j += L)
    for (int l = 0; l < L; ++l) acc[l] += static_cast<double>(x[j + l]);
  for (int l = 0; j + l < n; ++l) acc[l] += static_cast<double>(x[j + l]);
}

template <typename T>
inline void lane_add_abs(double* __restrict acc, const T* __restrict x, int64_t n) {
  constexpr int L = LANES<T>;
  int64_t j = 0;
  for (; j + L <= n; j += L)
    for (int l = 0; l < L; ++l) acc[l] += static_cast<double>(std::fabs(x[j + l]));
  for (int l = 0; j + l < n; ++l) acc[l] += static_cast<double>(std::fabs(x[j + l]));
}

template <typename T>
inline void lane_dot(double* __restrict acc, const T* __restrict x, const T* __restrict y, int64_t n) {
  constexpr int L = LANES<T>;
  int64_t j = 0;
  for (; j + L <= n; j += L)
    for (int l = 0; l < L; ++l) acc[l] += static_cast<double>(x[j + l]) * static_cast<double>(y[j + l]);
  for (int l = 0; j + l < n; ++l) acc[l] += static_cast<double>(x[j + l]) * static_cast<double>(y[j + l]);
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

template <typename T>
inline T row_max(const T* __restrict x, int64_t n) {
  constexpr int L = LANES<T>;
  T acc[L];
  for (int l = 0; l < L; ++l) acc[l] = x[0];
  int64_t j = 0;
  for (; j + L <= n; j += L)
    for (int l = 0; l < L; ++l) acc[l] = x[j + l] > acc[l] ? x[j + l] : acc[l];
  for (int l = 0; j + l < n; ++l) acc[l] = x[j + l] > acc[l] ? x[j + l] : acc[l];
  T m = acc[0];
  for (int l = 1; l < L; ++l) m = acc[l] > m ? acc[l] : m;
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
  AlignedBuf<T> raw_, val_, adj_, prow_, gprow_, trow_, zbuf_, lrow_;
  AlignedBuf<double> ebuf_, acc_;
  std::vector<const T*> vptr;
  T *raw, *val, *adj, *prow, *gprow, *trow, *zbuf, *lrow;
  double *ebuf, *acc;
  int64_t stride = 0;  // per-instruction chunk stride (a multiple of LANES<T>)
  void reserve(size_t n_instr, int64_t c, int64_t rows) {
    const int64_t cp = round_lanes<T>(c);
    stride = rows > 1 ? rows * cp : round_lanes<T>(std::min<int64_t>(c, CHUNK));
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
    ebuf = ebuf_.get(cs);
    acc = acc_.get(static_cast<size_t>(rows) * 3 * LANES<T>);
  }
};

struct Batch {
  const void* z;
  int z_dtype;
  const void* target;
  int target_kind;
  int64_t n, c;
  const double* consts;
  float* loss;
  void* grad;
};

template <typename S, typename T>
inline void load_row(const S* __restrict src, T* __restrict dst, int64_t c) {
  for (int64_t j = 0; j < c; ++j) dst[j] = static_cast<T>(src[j]);
}

// T: the compute type. Float64 logits compute in double. Float32 logits compute in float (twice
// the SIMD lanes, libmvec's float clones) when fp32 compute is on, with softmax and log-softmax
// evaluated in double and rounded once, and the row sums (softmax normaliser, loss, sum p*g_p,
// sum g_logp) and the final gradient combination in double; otherwise in double.
// Returns the number of rows recomputed in double (float path only).
template <typename TZ, typename T>
int64_t run_rows(const Program& prog, const Batch& b, int64_t r0, int64_t r1) {
  constexpr int L = LANES<T>;
  thread_local Workspace<T> tls_workspace;
  Workspace<T>& w = tls_workspace;
  const size_t ni = prog.size();
  const int64_t c = b.c;
  const int64_t R = rows_per_block<T>(c);
  const int64_t cp = round_lanes<T>(c);
  w.reserve(ni, c, R);
  const int64_t chunk = R > 1 ? R * cp : std::min<int64_t>(c, CHUNK);
  const int64_t stride = w.stride;
  const bool softmax = prog.use_p || prog.use_logp;
  const double cval = static_cast<double>(c);
  const T root_adj = static_cast<T>(prog.reduction == 1 ? 1.0 / cval : 1.0);
  const size_t root = ni - 1;
  const bool root_grad = prog.needs_grad[root] != 0;
  T* __restrict zrow = w.zbuf;
  T* __restrict prow = w.prow;
  T* __restrict gprow = w.gprow;
  T* __restrict trow = w.trow;
  T* __restrict lrow = w.lrow;
  double* __restrict loss_acc = w.acc;         // R x L
  double* __restrict logp_acc = w.acc + R * L;  // R x L
  double* __restrict labs_acc = w.acc + 2 * R * L;  // R x L: sum |f| (float path only)
  const double noise_ulps = g_fp32_noise_ulps.load();
  int64_t n_redo = 0;

  for (int64_t rb = r0; rb < r1; rb += R) {
    const int64_t nr = std::min<int64_t>(R, r1 - rb);
    const int64_t span = R > 1 ? nr * cp : c;  // elements of the block's row buffers in use
    // ---- per-row prologue: logits, softmax, log-softmax (padding: 0, 0, -shift)
    for (int64_t q = 0; q < nr; ++q) {
      const int64_t r = rb + q;
      T* zq = zrow + q * cp;
      load_row(static_cast<const TZ*>(b.z) + r * c, zq, c);
      for (int64_t j = c; j < cp; ++j) zq[j] = T(0);
      if (!softmax) continue;
      T* pq = prow + q * cp;
      T* lq = lrow + q * cp;
      const T mx = row_max(zq, c);
      if constexpr (sizeof(T) == 8) {
        for (int64_t j = 0; j < c; ++j) pq[j] = std::exp(zq[j] - mx);
        double acc[L] = {0.0};
        lane_add(acc, pq, c);
        const double s = lane_total<T>(acc);
        const double inv = 1.0 / s;
        for (int64_t j = 0; j < c; ++j) pq[j] *= inv;
        const double lse_shift = mx + std::log(s);
        if (prog.use_logp)
          for (int64_t j = 0; j < cp; ++j) lq[j] = zq[j] - lse_shift;
      } else {
        // float32: softmax and log-softmax in double, rounded once to float. The gradient through
        // p amplifies p's relative error by up to sum(p |g_p|) / |dz| (Baikal with probability
        // targets: 1e3), so p must be as good as PyTorch's; one pass per row.
        double* __restrict e = w.ebuf;
        const double mxd = static_cast<double>(mx);
        for (int64_t j = 0; j < c; ++j) e[j] = std::exp(static_cast<double>(zq[j]) - mxd);
        double acc[L] = {0.0};
        lane_add(acc, e, c);
        const double s = lane_total<T>(acc);
        const double inv = 1.0 / s;
        for (int64_t j = 0; j < c; ++j) pq[j] = static_cast<T>(e[j] * inv);
        if (prog.use_logp) {
          const double shift = mxd + std::log(s);
          for (int64_t j = 0; j < cp; ++j) lq[j] = static_cast<T>(static_cast<double>(zq[j]) - shift);
        }
      }
      for (int64_t j = c; j < cp; ++j) pq[j] = T(0);
    }
    if (root_grad) {
      std::fill(gprow, gprow + span, T(0));
      std::fill(trow, trow + span, T(0));
    }
    std::fill(loss_acc, loss_acc + 3 * R * L, 0.0);

    for (int64_t c0 = 0; c0 < span; c0 += chunk) {
      const int n = static_cast<int>(std::min<int64_t>(chunk, span - c0));
      // ---- forward
      for (size_t k = 0; k < ni; ++k) {
        const int o = prog.op[k];
        T* rk = w.raw + k * stride;
        const T* vk = rk;
        switch (o) {
          case L_Y:
            if (b.target_kind == T_INDEX_I64) {
              std::fill(rk, rk + n, T(0));
              for (int64_t q = 0; q < nr; ++q) {
                const int64_t t = static_cast<const int64_t*>(b.target)[rb + q] - c0;
                if (t >= 0 && t < (R > 1 ? c : n)) rk[q * cp + t] = T(1);
              }
            } else {
              for (int64_t q = 0; q < nr; ++q) {
                const int64_t len = R > 1 ? c : n, off = (rb + q) * c + c0;
                T* dq = rk + q * cp;
                if (b.target_kind == T_PROB_F32)
                  load_row(static_cast<const float*>(b.target) + off, dq, len);
                else
                  load_row(static_cast<const double*>(b.target) + off, dq, len);
                if (R > 1) std::fill(dq + c, dq + cp, T(0));
              }
            }
            break;
          case L_P:
            vk = prow + c0;
            break;
          case L_Z:
            vk = zrow + c0;
            break;
          case L_LOGP:
            vk = lrow + c0;
            break;
          case L_C:
            std::fill(rk, rk + n, static_cast<T>(cval));
            break;
          case L_NUM:
            std::fill(rk, rk + n, static_cast<T>(prog.value[k]));
            break;
          case L_CONST:
            std::fill(rk, rk + n, static_cast<T>(b.consts[prog.const_index[k]]));
            break;
          default: {
            const T* x0 = w.vptr[prog.a0[k]];
            const T* x1 = prog.a1[k] >= 0 ? w.vptr[prog.a1[k]] : x0;
            T* vv = w.val + k * stride;
            forward<T>(o, n, x0, x1, rk, vv);  // vv: the clamped value, for ops that are not bounded
            if (!OP_BOUNDED[o]) vk = vv;
          }
        }
        w.vptr[k] = vk;
      }
      if (R > 1) {
        for (int64_t q = 0; q < nr; ++q) lane_add(loss_acc + q * L, w.vptr[root] + q * cp, c);
      } else {
        lane_add(loss_acc, w.vptr[root], n);
      }
      if constexpr (sizeof(T) == 4) {
        if (R > 1) {
          for (int64_t q = 0; q < nr; ++q) lane_add_abs(labs_acc + q * L, w.vptr[root] + q * cp, c);
        } else {
          lane_add_abs(labs_acc, w.vptr[root], n);
        }
      }
      if (!root_grad) continue;
      // ---- reverse
      for (size_t k = 0; k < ni; ++k)
        if (prog.needs_grad[k]) std::fill(w.adj + k * stride, w.adj + k * stride + n, T(0));
      std::fill(w.adj + root * stride, w.adj + root * stride + n, root_adj);
      for (size_t kk = ni; kk-- > 0;) {
        if (!prog.needs_grad[kk]) continue;
        T* __restrict g = w.adj + kk * stride;  // clamped to +-MAXV where it is used
        const int o = prog.op[kk];
        switch (o) {
          case L_P:
            for (int i = 0; i < n; ++i) gprow[c0 + i] += nl_clamp_maxv(g[i]);
            break;
          case L_LOGP:
            for (int i = 0; i < n; ++i) {
              g[i] = nl_clamp_maxv(g[i]);
              trow[c0 + i] += g[i];
            }
            if (R > 1) {
              for (int64_t q = 0; q < nr; ++q) lane_add(logp_acc + q * L, g + q * cp, c);
            } else {
              lane_add(logp_acc, g, n);
            }
            break;
          case L_Z:
            for (int i = 0; i < n; ++i) trow[c0 + i] += nl_clamp_maxv(g[i]);
            break;
          default: {
            if (o < N_LEAF) break;
            const int i0 = prog.a0[kk], i1 = prog.a1[kk] >= 0 ? prog.a1[kk] : prog.a0[kk];
            T* ga = w.adj + static_cast<size_t>(i0) * stride;
            T* gb = w.adj + static_cast<size_t>(i1) * stride;
            // a unary op's gb is unused by the generated code
            backward<T>(o, n, w.vptr[i0], w.vptr[i1], w.raw + kk * stride, g, ga, gb);
          }
        }
      }
    }
    // ---- per-row epilogue: loss and the gradient through the softmax Jacobians
    for (int64_t q = 0; q < nr; ++q) {
      const int64_t r = rb + q;
      const double loss_sum = lane_total<T>(loss_acc + q * L);
      b.loss[r] = static_cast<float>(prog.reduction == 1 ? loss_sum / cval : loss_sum);
      TZ* __restrict dst = static_cast<TZ*>(b.grad) + r * c;
      const T* pq = prow + q * cp;
      const T* gq = gprow + q * cp;
      const T* tq = trow + q * cp;
      bool redo = false;
      if constexpr (sizeof(T) == 4) {
        // the class sum cancels (sum |f| >> |loss|): the float terms' noise may exceed 1e-6
        redo = noise_ulps * 0x1p-24 * lane_total<T>(labs_acc + q * L) > FP32_TOL * (1.0 + std::fabs(loss_sum));
      }
      if (!root_grad) {
        std::fill(dst, dst + c, static_cast<TZ>(0));
      } else if (softmax) {
        double acc[L] = {0.0};
        if (prog.use_p) lane_dot(acc, pq, gq, c);
        double sp = lane_total<T>(acc);
        const double sl = lane_total<T>(logp_acc + q * L);
        if constexpr (sizeof(T) == 4) {
          // float p is normalised only to ~1 ulp: use sum(p g_p) / sum(p), so that g_p - sp
          // vanishes exactly where g_p is constant along the row (d/dz of f(sum p) is 0).
          if (prog.use_p) {
            double pacc[L] = {0.0};
            lane_add(pacc, pq, c);
            sp /= lane_total<T>(pacc);
          }
        }
        if constexpr (sizeof(T) == 8) {
          for (int64_t j = 0; j < c; ++j) {
            const double pj = static_cast<double>(pq[j]);
            dst[j] = static_cast<TZ>(pj * (static_cast<double>(gq[j]) - sp) + static_cast<double>(tq[j]) - pj * sl);
          }
        } else {
          // separate simple loops: each vectorises (a fused one with the check does not)
          double* __restrict e = w.ebuf;
          for (int64_t j = 0; j < c; ++j) {
            const double pj = static_cast<double>(pq[j]);
            e[j] = pj * (static_cast<double>(gq[j]) - sp) + static_cast<double>(tq[j]) - pj * sl;
          }
          for (int64_t j = 0; j < c; ++j) dst[j] = static_cast<TZ>(e[j]);
          // rounding noise of the float adjoints (noise_ulps ulp of each term) against 1e-6 abs + rel
          const double k = noise_ulps * 0x1p-24, common = std::fabs(sp) + std::fabs(sl);
          int flag = 0;
          for (int64_t j = 0; j < c; ++j) {
            const double noise = k * (static_cast<double>(pq[j]) * (std::fabs(static_cast<double>(gq[j])) + common) +
                                      std::fabs(static_cast<double>(tq[j])));
            flag |= static_cast<int>(noise > FP32_TOL * (1.0 + std::fabs(e[j])));
          }
          redo = redo || flag != 0;
        }
      } else {
        for (int64_t j = 0; j < c; ++j) dst[j] = static_cast<TZ>(tq[j]);
      }
      if constexpr (sizeof(T) == 4) {
        // Ill-conditioned row (the softmax Jacobian or the class sum cancels large terms: Baikal
        // with probability targets, 1/(y - p), sin(40 p)...): float cannot promise ~1e-6, so the
        // row is recomputed in double. The decision depends only on the row: thread-independent.
        if (redo) {
          ++n_redo;
          run_rows<TZ, double>(prog, b, r, r + 1);
        }
      }
    }
  }
  if (n_redo) g_fp32_redo_rows.fetch_add(n_redo, std::memory_order_relaxed);
  return n_redo;
}

std::atomic<bool> g_fp32_compute{FP32_COMPUTE_DEFAULT};

void run_batch(const Program& prog, const Batch& b, int threads) {
  if (b.n == 0 || b.c == 0) return;
  // Small batches run on the calling thread: waking workers costs more than it saves.
  const double work = static_cast<double>(b.n) * static_cast<double>(b.c) * static_cast<double>(prog.size());
  if (work < 40000.0) threads = 1;
  const bool f32 = b.z_dtype == D_F32;
  bool f32c = f32 && g_fp32_compute.load() && b.c >= FP32_MIN_CLASSES;
  int64_t start = 0;
  if (f32c) {
    // Probe: the first rows (whole blocks, at least 8 rows) in float. When most of them had to be
    // recomputed in double (an ill-conditioned loss: Baikal, SCE), the rest of the batch computes
    // in double directly. The probe's rows are fixed, so the choice (and every result) does not
    // depend on the thread count.
    // a multiple of both block sizes, so that the blocks after it start at absolute multiples
    const int64_t R = std::lcm(rows_per_block<float>(b.c), rows_per_block<double>(b.c));
    start = std::min<int64_t>(b.n, (8 + R - 1) / R * R);
    const int64_t redo = run_rows<float, float>(prog, b, 0, start);
    if (2 * redo > start) f32c = false;
  }
  const int64_t align = f32c ? rows_per_block<float>(b.c) : rows_per_block<double>(b.c);
  auto body = [&](int64_t r0, int64_t r1) {
    r0 += start;
    r1 += start;
    if (f32c)
      run_rows<float, float>(prog, b, r0, r1);
    else if (f32)
      run_rows<float, double>(prog, b, r0, r1);
    else
      run_rows<double, double>(prog, b, r0, r1);
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
  if (op < N_LEAF || op >= N_OPCODES) throw std::invalid_argument("opcode is not a table op");
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
         uintptr_t consts, int64_t n_consts, uintptr_t loss, uintptr_t grad) {
        check_batch(prog, z_dtype, target_kind, n, c, n_consts);
        if (n > 0 && (!z || !target || !loss || !grad || (prog.n_consts > 0 && !consts)))
          throw std::invalid_argument("null buffer address");
        Batch b{reinterpret_cast<const void*>(z), z_dtype, reinterpret_cast<const void*>(target), target_kind, n, c,
                reinterpret_cast<const double*>(consts), reinterpret_cast<float*>(loss),
                reinterpret_cast<void*>(grad)};
        const int threads = num_threads();
        py::gil_scoped_release nogil;
        run_batch(prog, b, threads);
      },
      py::arg("program"), py::arg("z"), py::arg("z_dtype"), py::arg("target"), py::arg("target_kind"), py::arg("n"),
      py::arg("c"), py::arg("consts"), py::arg("n_consts"), py::arg("loss"), py::arg("grad"),
      "Evaluate on contiguous buffers given by address: logits z (N, C) f32/f64, target int64 (N,) "
      "or f32/f64 (N, C), float64 constants; writes float32 loss (N,) and grad (N, C) in z's dtype.");

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
