// The registry of live split-API objects. A handle is an opaque uint64 id; every use
// goes through lookup(), which checks that the id is live and of the expected kind
// before anything is dereferenced, so freed, foreign, random or wrong-kind handles give
// an InvalidArgument error instead of a crash. Objects are shared_ptr-owned, so freeing a
// handle while another thread still solves with it is safe.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "cache.hpp"
#include "pattern.hpp"

namespace klujax {

// A symbolic analysis: a handle on an analysed pattern. Every analyze() call gets its own
// id (so freeing one can never release another's), but all ids of one pattern share one
// Pattern object, which the cache keeps (pins) while any of them is live: numeric
// handles factored through one are usable with every other.
struct SymbolicObj {
  std::shared_ptr<Pattern> pattern;
};

// One numeric factorization (one batch member).
struct NumericObj {
  std::shared_ptr<Pattern> pattern;
  bool is_complex = false;
  std::mutex mu;  // klu_solve writes into the numeric object's workspace
  Fact fact;      // fact.ok is false while the last (re)factorization found it singular
};

class Registry {
 public:
  static Registry& instance();

  uint64_t add_symbolic(std::shared_ptr<Pattern> p);
  uint64_t add_numeric(std::shared_ptr<NumericObj> obj);
  std::shared_ptr<SymbolicObj> symbolic(uint64_t id, const char* op, const char* arg);
  std::shared_ptr<NumericObj> numeric(uint64_t id, const char* op, const char* arg);
  // Returns how many objects were freed; unknown ids (double frees) are ignored.
  int64_t free_symbolic(uint64_t id);
  int64_t free_numeric(uint64_t id);
  int64_t live_symbolic();
  int64_t live_numeric();

 private:
  Registry();
  uint64_t next_id_locked(uint64_t tag);

  std::mutex mu_;
  uint64_t salt_, counter_ = 0;
  struct Map;
  std::unique_ptr<Map> map_;
};

}  // namespace klujax
