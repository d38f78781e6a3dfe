#include "handles.hpp"

#include <chrono>
#include <random>
#include <string>
#include <unordered_map>

namespace klujax {

namespace {
constexpr uint64_t kSymbolicTag = 0x5;
constexpr uint64_t kNumericTag = 0xA;
}  // namespace

struct Registry::Map {
  std::unordered_map<uint64_t, std::shared_ptr<SymbolicObj>> sym;
  std::unordered_map<uint64_t, std::shared_ptr<NumericObj>> num;
};

Registry& Registry::instance() {
  static Registry* r = new Registry();  // leaked on purpose: handles may outlive statics
  return *r;
}

Registry::Registry() : map_(std::make_unique<Map>()) {
  std::random_device rd;
  salt_ = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^
          static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
}

uint64_t Registry::next_id_locked(uint64_t tag) {
  // Ids are a counter scrambled by a per-process salt: random integers and handles from
  // another process are vanishingly unlikely to be live ids. The low 4 bits hold the kind.
  uint64_t id;
  do {
    uint64_t x = (++counter_ ^ salt_) * 0x9E3779B97F4A7C15ULL;
    x ^= x >> 31;
    id = (x & ~uint64_t{0xF}) | tag;
  } while (id == 0 || map_->sym.count(id) || map_->num.count(id));
  return id;
}

uint64_t Registry::add_symbolic(std::shared_ptr<Pattern> p) {
  p = Cache::instance().pin(p);
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t id = next_id_locked(kSymbolicTag);
  auto obj = std::make_shared<SymbolicObj>();
  obj->pattern = std::move(p);
  map_->sym[id] = std::move(obj);
  return id;
}

uint64_t Registry::add_numeric(std::shared_ptr<NumericObj> obj) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t id = next_id_locked(kNumericTag);
  map_->num[id] = std::move(obj);
  return id;
}

// The one choke point before a handle is dereferenced: live, and of the expected kind.
template <class Map, class Other>
static auto checked_lookup(const Map& map, const Other& other, uint64_t id, const char* op,
                           const char* arg, const char* kind, const char* other_kind) {
  auto it = map.find(id);
  if (it != map.end()) return it->second;
  const std::string head = std::string(op) + ": " + arg + " = " + std::to_string(id) + " is ";
  if (other.count(id))
    throw InvalidArgument(head + "a " + other_kind + " handle, expected a " + kind + " one");
  throw InvalidArgument(head + "not a live " + kind +
                        " handle (freed, never allocated, or from another process)");
}

std::shared_ptr<SymbolicObj> Registry::symbolic(uint64_t id, const char* op, const char* arg) {
  std::lock_guard<std::mutex> lock(mu_);
  return checked_lookup(map_->sym, map_->num, id, op, arg, "symbolic", "numeric");
}

std::shared_ptr<NumericObj> Registry::numeric(uint64_t id, const char* op, const char* arg) {
  std::lock_guard<std::mutex> lock(mu_);
  return checked_lookup(map_->num, map_->sym, id, op, arg, "numeric", "symbolic");
}

int64_t Registry::free_symbolic(uint64_t id) {
  std::shared_ptr<SymbolicObj> dead;  // destroyed outside the lock
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_->sym.find(id);
    if (it == map_->sym.end()) return 0;
    dead = std::move(it->second);
    map_->sym.erase(it);
  }
  Cache::instance().unpin(*dead->pattern);
  return 1;
}

int64_t Registry::free_numeric(uint64_t id) {
  std::shared_ptr<NumericObj> dead;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = map_->num.find(id);
  if (it == map_->num.end()) return 0;
  dead = std::move(it->second);
  map_->num.erase(it);
  return 1;
}

int64_t Registry::live_symbolic() {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(map_->sym.size());
}

int64_t Registry::live_numeric() {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(map_->num.size());
}

}  // namespace klujax
