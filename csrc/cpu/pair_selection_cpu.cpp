// The pairs mining keeps on the CPU (pair_selection.h): the k hardest (hardness,
// then smaller a, then smaller b), by a table of every pair's hardness for
// tasks of at most mining_table_max_pairs() pairs and by a buffered selection
// of O(max_pairs) candidates for larger ones, and the rest drawn uniformly by
// Floyd's algorithm on the task's Philox stream.
#include "cpu/pair_selection.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>

#include "loss/pair_select.h"
#include "loss/tuning.h"

namespace spinerank::cpu {
namespace {

// ---------------------------------------------------------------------------
// Buffered selection.

// Larger hardness first; equal: smaller pair index, i.e. smaller a, then b.
struct Hard {
  double h;
  uint64_t key;
  int64_t index;
};
bool harder_first(const Hard& u, const Hard& v) { return u.key != v.key ? u.key > v.key : u.index < v.index; }

// The k hardest pairs offered so far: a buffer of 2k candidates is cut back to
// the k hardest whenever it fills, and the k-th hardest then rejects most
// later candidates with one comparison: O(P) time on average, O(k) memory.
class HardestK {
 public:
  explicit HardestK(int64_t k) : k_(k) { buf_.reserve(2 * k); }

  // The hardness a pair must reach (harder or equal pairs may enter).
  double threshold() const { return threshold_; }

  void offer(double h, int64_t index) {
    const Hard c{h, hardness_key(h), index};
    if (full_ && !harder_first(c, buf_[k_ - 1])) return;
    buf_.push_back(c);
    if (int64_t(buf_.size()) == 2 * k_) {
      cut();
      full_ = true;  // from now on buf_[k_ - 1] is the k-th hardest pair so far
      threshold_ = buf_[k_ - 1].h;
    }
  }

  // The kept pair indices, sorted.
  std::vector<int64_t> sorted_indices() {
    if (int64_t(buf_.size()) > k_) cut();
    std::vector<int64_t> out;
    out.reserve(buf_.size());
    for (const Hard& c : buf_) out.push_back(c.index);
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  void cut() {
    std::nth_element(buf_.begin(), buf_.begin() + (k_ - 1), buf_.end(), harder_first);
    buf_.resize(k_);
  }

  int64_t k_;
  std::vector<Hard> buf_;
  bool full_ = false;
  double threshold_ = -INFINITY;
};

// The k hardest pairs of a task as pair indices (lexicographic order), sorted.
// The result is the k first pairs of a total order, so it does not depend on
// the order the pairs are visited in: per sample a, the partners b > a are
// visited grade group by grade group, where the margin and sign are constants
// and the hardness of a run of partners is a vectorisable loop; only runs with
// a pair at least as hard as the k-th go through the buffer.
std::vector<int64_t> hardest_pairs(const LossParams& p, const TaskSamples& ts, int K, int64_t k) {
  if (k == 0) return {};
  const int n = ts.n();
  const double inv_km1 = 1.0 / double(K - 1);
  // Samples grouped by grade, batch order kept within a group: the partners
  // b > a of a group are then a suffix of it.
  const GradeGroups gg = group_by_grade(ts);
  const std::vector<int>& start = gg.start;
  const std::vector<int>& position = gg.pos;
  std::vector<int> next(start.begin(), start.end() - 1);  // per group: first member past a
  HardestK best(k);
  // The hardness of a run of partners b of a, with the bits of mining_hardness.
  constexpr int kChunk = 64;
  auto scan = [&](int a, int lo, int hi, auto hardness) {
    const int64_t row = pair_row_offset(n, a) - a - 1;  // + b: the index of pair (a, b)
    const double* sc = gg.s.data();
    for (int b0 = lo; b0 < hi; b0 += kChunk) {
      const int b1 = std::min(hi, b0 + kChunk);
      const double bound = best.threshold();
      int any = 0;
#pragma omp simd reduction(| : any)
      for (int b = b0; b < b1; ++b) any |= int(hardness(sc[b]) >= bound);
      if (!any) continue;
      for (int b = b0; b < b1; ++b) {
        const double h = hardness(sc[b]);
        if (h >= best.threshold()) best.offer(h, row + position[b]);
      }
    }
  };
  for (int a = 0; a < n; ++a) {
    const double sa = ts.s[a];
    for (int c = 0; c < gg.count(); ++c) {
      int& lo = next[c];
      while (lo < start[c + 1] && position[lo] <= a) ++lo;
      if (lo == start[c + 1]) continue;
      const int d = ts.y[a] - gg.grade[c];
      if (d == 0) {
        scan(a, lo, start[c + 1], [sa](double sb) { return similar_hardness(sa - sb); });
      } else {
        const double m = mining_margin(p, d, inv_km1), r = d > 0 ? 1.0 : -1.0;
        scan(a, lo, start[c + 1], [sa, m, r](double sb) { return ordinal_hardness(m, r, sa - sb); });
      }
    }
  }
  return best.sorted_indices();
}

// ---------------------------------------------------------------------------
// Table selection: every pair's hardness is written in pair-index order; a
// sample's quantile gives a bound that at least k pairs reach (checked,
// lowered if not), leaving a few hundred candidates; a histogram of the
// candidates narrows the k-th largest hardness v down to one bucket, where it
// is selected exactly. One pass over the candidates in index order then keeps
// the pairs harder than v and the first ones equal to v: the result comes out
// sorted, ties broken by the smaller index.

// Per-thread scratch, kept between calls (at most mining_table_max_pairs()
// entries): a fresh allocation of this size is page-faulted in on every call,
// which cost more than the selection itself at P = 130k on the project's machine.
struct TableScratch {
  std::unique_ptr<double[]> hard;
  std::unique_ptr<int[]> cand;
  int64_t size = 0;
};
TableScratch& table_scratch(int64_t P) {
  thread_local TableScratch scratch;
  if (scratch.size < P) {
    scratch.hard.reset(new double[P]);
    scratch.cand.reset(new int[P]);
    scratch.size = P;
  }
  return scratch;
}

// hard[q]: the hardness of pair q, with the bits of mining_hardness (as in
// hardest_pairs), branch-free so that the loop over b vectorises: with
// c = y_a, h = max(ordinal_hardness(lin[c][b], sgn[c][b], delta), same[c][b] + delta).
// The first term is m - r * delta for ordinal pairs and -delta for similar
// ones (lin = 0, sgn = 1); the second is delta for similar pairs and -inf
// otherwise. So h = |delta| or m - r * delta.
void fill_hardness_table(const LossParams& p, const TaskSamples& ts, int K, double* hard) {
  const int n = ts.n();
  const double inv_km1 = 1.0 / double(K - 1);
  // Rows of the tables by the grade group of a (only the grades present).
  const GroupIndex gi = group_index(ts);
  const int G = int(gi.grade.size());
  std::vector<double> margin(size_t(G) * G, 0.0);  // by the groups of a and b
  for (int c = 0; c < G; ++c)
    for (int c2 = 0; c2 < G; ++c2)
      if (c != c2) margin[size_t(c) * G + c2] = mining_margin(p, gi.grade[c] - gi.grade[c2], inv_km1);
  std::vector<double> lin(size_t(G) * n), sgn(size_t(G) * n), same(size_t(G) * n);
  for (int c = 0; c < G; ++c)
    for (int b = 0; b < n; ++b) {
      const int c2 = gi.group[b];
      lin[size_t(c) * n + b] = margin[size_t(c) * G + c2];
      sgn[size_t(c) * n + b] = c < c2 ? -1.0 : 1.0;  // groups are in grade order
      same[size_t(c) * n + b] = c == c2 ? 0.0 : -INFINITY;
    }
  const double* s = ts.s.data();
  double* h = hard;
  for (int a = 0; a < n; ++a) {
    const double sa = s[a];
    const size_t c = size_t(gi.group[a]) * n;
    const double* __restrict m = lin.data() + c;
    const double* __restrict r = sgn.data() + c;
    const double* __restrict z = same.data() + c;
    double* __restrict out = h - (a + 1);
    for (int b = a + 1; b < n; ++b) {
      const double delta = sa - s[b];
      const double ordinal = ordinal_hardness(m[b], r[b], delta), similar = z[b] + delta;
      out[b] = ordinal < similar ? similar : ordinal;
    }
    h += n - a - 1;
  }
}

// The pairs at least as hard as a bound that at least k of P pairs reach, in
// index order (cand[0..count)): the bound is the sample value two standard
// deviations past the k / P fraction, so that usually a single pass suffices.
struct Candidates {
  int64_t count;
  double bound;  // -inf: every pair
  double top;    // the sample's largest value
};
Candidates hard_candidates(const double* hard, int64_t P, int64_t k, int* cand) {
  constexpr int64_t kSample = 256;
  const int64_t S = std::min(P, kSample);
  std::vector<double> sample(S);
  for (int64_t i = 0; i < S; ++i) sample[i] = hard[i * P / S];
  const double expected = double(k) * double(S) / double(P);
  Candidates c{0, -INFINITY, *std::max_element(sample.begin(), sample.end())};
  for (int64_t rank = int64_t(expected + 2.0 * std::sqrt(expected) + 2.0);; rank = 2 * rank + 1) {
    c.bound = -INFINITY;  // past the sample's end only -inf is certain
    if (rank < S) {
      std::nth_element(sample.begin(), sample.begin() + rank, sample.end(), std::greater<double>());
      c.bound = sample[rank];
    }
    c.count = 0;
    for (int64_t q = 0; q < P; ++q) {  // branch-free compaction
      cand[c.count] = int(q);
      c.count += hard[q] >= c.bound;
    }
    if (c.count >= k) return c;
  }
}

// The k-th largest v of value (at least k entries, all >= c.bound) and how many
// entries equal to v are among the k largest. A histogram over [bound, top]
// (larger values go to the last bucket): the bucket function is monotone, so v
// lies in the bucket where the count from the top reaches k.
struct KthLargest {
  double v;
  int64_t ties;
};
KthLargest kth_largest(const std::vector<double>& value, int64_t k, const Candidates& c) {
  const double lo = std::isfinite(c.bound) ? c.bound : *std::min_element(value.begin(), value.end());
  constexpr int kBuckets = 256;
  const double scale = c.top > lo ? double(kBuckets) / (c.top - lo) : 0.0;
  auto bucket = [&](double h) {
    const double x = (h - lo) * scale;
    return x >= double(kBuckets - 1) ? kBuckets - 1 : int(x);
  };
  std::vector<int64_t> count(kBuckets, 0);
  for (const double h : value) ++count[bucket(h)];
  int64_t above = 0;  // entries in buckets above the k-th largest's
  int pick = kBuckets - 1;
  while (above + count[pick] < k) above += count[pick--];
  std::vector<double> in_bucket;
  in_bucket.reserve(count[pick]);
  for (const double h : value)
    if (bucket(h) == pick) in_bucket.push_back(h);
  const int64_t r = k - above - 1;  // v is the r-th largest (0-based) in the bucket
  std::nth_element(in_bucket.begin(), in_bucket.begin() + r, in_bucket.end(), std::greater<double>());
  KthLargest out{in_bucket[r], k - above};
  for (const double h : in_bucket) out.ties -= h > out.v;
  return out;
}

// The k hardest pairs as hardest_pairs defines them, for tasks whose P pairs'
// hardness fits in a table (P <= mining_table_max_pairs()).
std::vector<int64_t> hardest_pairs_table(const LossParams& p, const TaskSamples& ts, int K, int64_t k) {
  if (k == 0) return {};
  const int64_t P = int64_t(ts.n()) * (ts.n() - 1) / 2;
  TableScratch& scratch = table_scratch(P);
  fill_hardness_table(p, ts, K, scratch.hard.get());
  int* const cand = scratch.cand.get();
  const Candidates c = hard_candidates(scratch.hard.get(), P, k, cand);
  std::vector<double> value(c.count);
  for (int64_t i = 0; i < c.count; ++i) value[i] = scratch.hard[cand[i]];
  const KthLargest kth = kth_largest(value, k, c);
  std::vector<int64_t> out(k + 1);  // + 1: the branch-free loop writes one past the last kept
  int64_t kept = 0, ties = kth.ties;
  for (int64_t i = 0; i < c.count; ++i) {
    const bool tie = value[i] == kth.v, keep = value[i] > kth.v || (tie && ties > 0);
    out[kept] = cand[i];
    kept += keep;
    ties -= tie && keep;
  }
  out.resize(k);
  return out;
}

// ---------------------------------------------------------------------------
// The random part.

// k pair indices drawn uniformly without replacement from the P pairs that are
// not in `hard` (sorted), by Floyd's algorithm on the task's Philox stream; sorted.
// The drawn ranks live in a bitmap over the candidates when they are few, else
// in an open-addressing table (csrc/loss/pair_select.h, as on CUDA) and are sorted:
// the same set either way, no allocation per draw.
std::vector<int64_t> random_pairs(int64_t P, const std::vector<int64_t>& hard, int64_t k,
                                  uint64_t seed, int task) {
  const int64_t M = P - int64_t(hard.size());
  // The draws do not depend on each other: computed first, they overlap in
  // the pipeline (Philox is a chain of dependent multiplies).
  std::vector<int64_t> draws(k);
  for (int64_t i = 0; i < k; ++i) draws[i] = floyd_draw(seed, task, M - k + i);
  std::vector<int64_t> ranks;
  ranks.reserve(k);
  const int64_t words = (M + 63) / 64;
  if (words <= 4 * k + 1024) {
    // Few candidates: the set is a bitmap over the M ranks, read out in order
    // (no sort), for less than sorting the k ranks would cost.
    std::vector<uint64_t> taken(words, 0);
    for (int64_t i = 0; i < k; ++i) {
      int64_t r = draws[i];
      if (taken[r >> 6] >> (r & 63) & 1) r = M - k + i;
      taken[r >> 6] |= uint64_t(1) << (r & 63);
    }
    for (int64_t w = 0; w < words; ++w)
      for (uint64_t bits = taken[w]; bits; bits &= bits - 1)
        ranks.push_back(64 * w + __builtin_ctzll(bits));
  } else {
    const int64_t cap = hash_capacity(k);
    std::vector<int64_t> drawn(cap, -1);
    for (int64_t i = 0; i < k; ++i) {
      const int64_t j = M - k + i, r = draws[i];
      const int64_t pick = hash_insert(drawn.data(), cap, r) ? r : j;
      if (pick == j) hash_insert(drawn.data(), cap, j);
      ranks.push_back(pick);
    }
    std::sort(ranks.begin(), ranks.end());
  }
  // The r-th pair not in `hard` is r + (number of hard pairs before it).
  size_t h = 0;
  for (int64_t& r : ranks) {
    while (h < hard.size() && hard[h] <= r + int64_t(h)) ++h;
    r += int64_t(h);
  }
  return ranks;
}

}  // namespace

std::vector<Pair> select_pairs(const LossParams& p, const TaskSamples& ts, int K,
                               int64_t max_pairs, double hard_fraction, uint64_t seed,
                               int task) {
  const int64_t n = ts.n();
  const KeepCounts kc = keep_counts(n, max_pairs, hard_fraction);  // as the CUDA select kernel
  if (kc.keep_all) {
    std::vector<Pair> all;
    all.reserve(kc.P);
    for (int a = 0; a < n; ++a)
      for (int b = a + 1; b < n; ++b) all.push_back({a, b});
    return all;
  }
  // The table indexes pairs with int: never past INT32_MAX, whatever the cap.
  const std::vector<int64_t> hard = kc.P <= std::min<int64_t>(mining_table_max_pairs(), INT32_MAX)
                                        ? hardest_pairs_table(p, ts, K, kc.k_hard)
                                        : hardest_pairs(p, ts, K, kc.k_hard);
  const std::vector<int64_t> drawn = random_pairs(kc.P, hard, kc.k_rand, seed, task);
  std::vector<int64_t> kept(hard.size() + drawn.size());
  std::merge(hard.begin(), hard.end(), drawn.begin(), drawn.end(), kept.begin());

  // Pair index -> (a, b), walking the rows once since `kept` is sorted.
  std::vector<Pair> pairs;
  pairs.reserve(kept.size());
  int64_t a = 0;
  for (const int64_t q : kept) {
    while (pair_row_offset(n, a + 1) <= q) ++a;
    pairs.push_back({int(a), int(a + 1 + (q - pair_row_offset(n, a)))});
  }
  return pairs;
}

}  // namespace spinerank::cpu
