// BpfMap: element operations on a map of a BpfObject (owned by it) or a pinned map (own fd).
#include "common.h"

#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <unordered_set>
#include <vector>

namespace bpx {

bool IsPerCpuMapType(uint32_t type) {
  switch (type) {
    case BPF_MAP_TYPE_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_ARRAY:
    case BPF_MAP_TYPE_LRU_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE:
      return true;
    default:
      return false;
  }
}

static int MapIdOfFd(int fd) {
  if (fd < 0) return 0;
  bpf_map_info mi;
  std::memset(&mi, 0, sizeof(mi));
  uint32_t len = sizeof(mi);
  return bpf_obj_get_info_by_fd(fd, &mi, &len) ? 0 : mi.id;
}

static Napi::Object InfoObject(Napi::Env env, const std::string& name, uint32_t type, uint32_t keySize,
                               uint32_t valueSize, uint32_t maxEntries, uint32_t id) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", name);
  o.Set("type", type);
  o.Set("keySize", keySize);
  o.Set("valueSize", valueSize);
  o.Set("maxEntries", maxEntries);
  o.Set("id", id);
  return o;
}

Napi::Object ObjectMapInfo(Napi::Env env, bpf_map* map) {
  return InfoObject(env, bpf_map__name(map), bpf_map__type(map), bpf_map__key_size(map), bpf_map__value_size(map),
                    bpf_map__max_entries(map), MapIdOfFd(bpf_map__fd(map)));
}

namespace {

// Batch commands answer these when the map type has no batch op (ENOTSUPP is kernel-internal, 524).
bool BatchUnsupported(int err) {
  err = err < 0 ? -err : err;
  return err == EINVAL || err == 524 || err == EOPNOTSUPP;
}

// ---- element operations that run on the main thread or a libuv worker: no N-API in here ----------------

// A failed kernel call: what failed, its (negative) error, and where in a batch.
struct OpResult {
  int err = 0;
  std::string op, detail;
};

struct MapFacts {
  int fd = -1;
  size_t ks = 0, vs = 0;  // vs: value size as the syscalls see it (per-CPU maps: all CPUs)
  uint32_t maxEntries = 0;
};

OpResult WalkAll(const MapFacts& m, std::vector<uint8_t>& keys, std::vector<uint8_t>& values, uint32_t& count);

// Every entry. BPF_MAP_LOOKUP_BATCH reads a bucket-consistent chunk per syscall; kernels or map types
// without it fall back to a get_next_key walk (two syscalls per entry).
OpResult ReadAll(const MapFacts& m, std::vector<uint8_t>& keys, std::vector<uint8_t>& values, uint32_t& count) {
  OpResult r;
  count = 0;
  keys.clear();
  values.clear();
  // The batch token of hash and array maps is a u32 bucket/index; room for a key covers other types.
  std::vector<uint8_t> inTok(m.ks > 8 ? m.ks : 8), outTok(inTok.size());
  uint32_t chunk = m.maxEntries < 4096 ? (m.maxEntries ? m.maxEntries : 1) : 4096;
  // Big values (Maglev tables are 64 KiB each) must not make one chunk hundreds of MiB.
  const size_t chunkBytes = 4u << 20;
  if (m.vs && chunk * m.vs > chunkBytes) chunk = std::max<uint32_t>(1, static_cast<uint32_t>(chunkBytes / m.vs));
  bool first = true;
  for (;;) {
    size_t have = count;
    keys.resize((have + chunk) * m.ks);
    values.resize((have + chunk) * m.vs);
    uint32_t n = chunk;
    auto opts = Opts<bpf_map_batch_opts>();
    int err = bpf_map_lookup_batch(m.fd, first ? nullptr : inTok.data(), outTok.data(), keys.data() + have * m.ks,
                                   values.data() + have * m.vs, &n, &opts);
    if (err && err != -ENOENT) {
      if (err == -ENOSPC && chunk < (1u << 24)) {  // one bucket holds more than a chunk: ask for more
        chunk *= 2;
        continue;
      }
      if (first && BatchUnsupported(err)) return WalkAll(m, keys, values, count);
      r.err = err;
      r.op = "bpf_map_lookup_batch";
      return r;
    }
    count += n;
    first = false;
    if (err == -ENOENT) break;
    inTok.swap(outTok);
  }
  keys.resize(static_cast<size_t>(count) * m.ks);
  values.resize(static_cast<size_t>(count) * m.vs);
  return r;
}

OpResult WalkAll(const MapFacts& m, std::vector<uint8_t>& keys, std::vector<uint8_t>& values, uint32_t& count) {
  OpResult r;
  std::vector<uint8_t> cur(m.ks), next(m.ks), val(m.vs);
  keys.clear();
  values.clear();
  // A hash map answers get_next_key for a key deleted meanwhile with its first key, i.e. the walk
  // restarts; `seen` drops the repeats, and the step bound ends a walk that concurrent churn keeps
  // restarting.
  std::unordered_set<std::string> seen;
  uint64_t steps = 0, maxSteps = 4ull * m.maxEntries + 1024;
  bool first = true;
  for (;;) {
    int err = bpf_map_get_next_key(m.fd, first ? nullptr : cur.data(), next.data());
    if (err == -ENOENT) break;
    if (err) return {err, "bpf_map_get_next_key", ""};
    first = false;
    cur.swap(next);
    if (++steps > maxSteps) return {-EAGAIN, "bpf_map_get_next_key", "map changed too much during iteration"};
    std::string k(reinterpret_cast<const char*>(cur.data()), m.ks);
    if (seen.count(k)) continue;
    err = bpf_map_lookup_elem(m.fd, cur.data(), val.data());
    if (err == -ENOENT) continue;  // deleted between get_next_key and lookup
    if (err) return {err, "bpf_map_lookup_elem", ""};
    seen.insert(std::move(k));
    keys.insert(keys.end(), cur.begin(), cur.end());
    values.insert(values.end(), val.begin(), val.end());
  }
  count = static_cast<uint32_t>(seen.size());
  return r;
}

OpResult UpdateMany(const MapFacts& m, const uint8_t* keys, const uint8_t* values, uint32_t count, uint32_t flags) {
  if (count == 0) return {};
  auto opts = Opts<bpf_map_batch_opts>();
  opts.elem_flags = flags;
  uint32_t done = count;
  int err = bpf_map_update_batch(m.fd, keys, values, &done, &opts);
  if (!err) return {};
  if (!BatchUnsupported(err))
    return {err, "bpf_map_update_batch", "after " + std::to_string(done) + " of " + std::to_string(count)};
  // The kernel reports how many it processed before failing; when it did not get that far (no batch op at
  // all) the count comes back unchanged, so start over.
  uint32_t from = done < count ? done : 0;
  for (uint32_t i = from; i < count; i++) {
    err = bpf_map_update_elem(m.fd, keys + i * m.ks, values + i * m.vs, flags);
    if (err) return {err, "bpf_map_update_elem", "at batch index " + std::to_string(i)};
  }
  return {};
}

OpResult DeleteMany(const MapFacts& m, const uint8_t* keys, uint32_t count, uint32_t& deleted) {
  deleted = 0;
  if (count == 0) return {};
  auto opts = Opts<bpf_map_batch_opts>();
  uint32_t done = count;
  int err = bpf_map_delete_batch(m.fd, keys, &done, &opts);
  if (!err) {
    deleted = count;
    return {};
  }
  // The batch stops at the first absent key (ENOENT) having deleted `done`; carry on one by one from
  // there. Without batch support start from the beginning.
  uint32_t from;
  if (err == -ENOENT && done < count) {
    from = done + 1;  // keys[done] is the absent one
    deleted = done;
  } else if (BatchUnsupported(err)) {
    from = done < count ? done : 0;
    deleted = from;
  } else {
    return {err, "bpf_map_delete_batch", ""};
  }
  for (uint32_t i = from; i < count; i++) {
    err = bpf_map_delete_elem(m.fd, keys + i * m.ks);
    if (err == -ENOENT) continue;
    if (err) return {err, "bpf_map_delete_elem", "at batch index " + std::to_string(i)};
    deleted++;
  }
  return {};
}

Napi::Object EntriesObject(Napi::Env env, const std::vector<uint8_t>& keys, const std::vector<uint8_t>& values,
                           uint32_t count) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("keys", Napi::Buffer<uint8_t>::Copy(env, keys.data(), keys.size()));
  out.Set("values", Napi::Buffer<uint8_t>::Copy(env, values.data(), values.size()));
  out.Set("count", Napi::Number::New(env, static_cast<double>(count)));
  return out;
}

// Runs one of the operations above on a libuv worker, on its own dup of the map fd (closing the map
// or object meanwhile is harmless) and its own copy of the input bytes.
class MapWorker : public Napi::AsyncWorker {
 public:
  enum Kind { kRead, kUpdate, kDelete };
  MapWorker(Napi::Env env, Kind kind, MapFacts m, std::vector<uint8_t> keys, std::vector<uint8_t> values,
            uint32_t count, uint32_t flags)
      : Napi::AsyncWorker(env, "bpfproxy.map"),
        deferred_(Napi::Promise::Deferred::New(env)),
        kind_(kind),
        m_(m),
        keys_(std::move(keys)),
        values_(std::move(values)),
        count_(count),
        flags_(flags) {}

  ~MapWorker() override {
    if (m_.fd >= 0) ::close(m_.fd);
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    switch (kind_) {
      case kRead:
        res_ = ReadAll(m_, keys_, values_, count_);
        break;
      case kUpdate:
        res_ = UpdateMany(m_, keys_.data(), values_.data(), count_, flags_);
        break;
      case kDelete:
        res_ = DeleteMany(m_, keys_.data(), count_, deleted_);
        break;
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (res_.err) {
      deferred_.Reject(MakeError(env, res_.op, res_.err, res_.detail).Value());
      return;
    }
    switch (kind_) {
      case kRead:
        deferred_.Resolve(EntriesObject(env, keys_, values_, count_));
        break;
      case kUpdate:
        deferred_.Resolve(env.Undefined());
        break;
      case kDelete:
        deferred_.Resolve(Napi::Number::New(env, deleted_));
        break;
    }
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  Kind kind_;
  MapFacts m_;
  std::vector<uint8_t> keys_, values_;
  uint32_t count_, flags_, deleted_ = 0;
  OpResult res_;
};

struct MapInit {
  std::shared_ptr<ObjectState> owner;
  bpf_map* map = nullptr;
  int fd = -1;  // own fd (pinned maps)
  std::string name;
  uint32_t type = 0, keySize = 0, valueSize = 0, maxEntries = 0;
};

class BpfMap : public Napi::ObjectWrap<BpfMap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "BpfMap",
                       {
                           StaticMethod<&BpfMap::OpenPinned>("openPinned"),
                           InstanceAccessor<&BpfMap::Info>("info"),
                           InstanceAccessor<&BpfMap::FdGetter>("fd"),
                           InstanceAccessor<&BpfMap::ValueSizeAllGetter>("valueSizeAll"),
                           InstanceMethod<&BpfMap::Lookup>("lookup"),
                           InstanceMethod<&BpfMap::Update>("update"),
                           InstanceMethod<&BpfMap::Delete>("delete"),
                           InstanceMethod<&BpfMap::UpdateBatch>("updateBatch"),
                           InstanceMethod<&BpfMap::DeleteBatch>("deleteBatch"),
                           InstanceMethod<&BpfMap::Entries>("entries"),
                           InstanceMethod<&BpfMap::EntriesAsync>("entriesAsync"),
                           InstanceMethod<&BpfMap::UpdateBatchAsync>("updateBatchAsync"),
                           InstanceMethod<&BpfMap::DeleteBatchAsync>("deleteBatchAsync"),
                           InstanceMethod<&BpfMap::Pin>("pin"),
                           InstanceMethod<&BpfMap::Close>("close"),
                       });
  }

  BpfMap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BpfMap>(info) {
    if (info.Length() < 1 || !info[0].IsExternal())
      throw Napi::TypeError::New(info.Env(),
                                 "BpfMap cannot be constructed directly; use BpfMap.openPinned() or BpfObject.map()");
    MapInit* init = info[0].As<Napi::External<MapInit>>().Data();
    owner_ = init->owner;
    map_ = init->map;
    fd_ = init->fd;
    name_ = init->name;
    type_ = init->type;
    keySize_ = init->keySize;
    valueSize_ = init->valueSize;
    maxEntries_ = init->maxEntries;
  }

  ~BpfMap() override {
    if (!owner_ && fd_ >= 0) ::close(fd_);
  }

  static Napi::Object Wrap(Napi::Env env, MapInit& init) {
    return Data(env)->mapCtor.New({Napi::External<MapInit>::New(env, &init)});
  }

 private:
  // Static facts: for object maps they come from libbpf (fixed once opened), for pinned maps from the kernel.
  uint32_t KeySize() const { return map_ ? bpf_map__key_size(map_) : keySize_; }
  uint32_t ValueSize() const { return map_ ? bpf_map__value_size(map_) : valueSize_; }
  uint32_t Type() const { return map_ ? static_cast<uint32_t>(bpf_map__type(map_)) : type_; }
  uint32_t MaxEntries() const { return map_ ? bpf_map__max_entries(map_) : maxEntries_; }

  size_t ValueSizeAll() const {
    size_t vs = ValueSize();
    if (!IsPerCpuMapType(Type())) return vs;
    int cpus = libbpf_num_possible_cpus();
    return ((vs + 7) / 8) * 8 * static_cast<size_t>(cpus > 0 ? cpus : 1);
  }

  void CheckOpen(Napi::Env env, const char* op) {
    if (closed_) ThrowClosed(env, op, "BpfMap");
    if (owner_ && owner_->closed()) ThrowClosed(env, op, "BpfObject");
  }

  int Fd(Napi::Env env, const char* op) {
    CheckOpen(env, op);
    if (!map_) return fd_;
    int fd = bpf_map__fd(map_);
    if (fd < 0)
      ThrowErrno(env, op, EBADF, "map '" + std::string(bpf_map__name(map_)) + "' is not loaded yet (BpfObject.load)");
    return fd;
  }

  // Lengths are validated precisely in TS; here they only keep the kernel from reading past a buffer.
  void CheckLen(Napi::Env env, size_t got, size_t want, const char* what) {
    if (got != want)
      throw Napi::RangeError::New(
          env, std::string(what) + " must be " + std::to_string(want) + " bytes, got " + std::to_string(got));
  }

  static Napi::Value OpenPinned(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string path = ArgString(info, 0, "path");
    // A read-only handle (BPF_F_RDONLY) needs only read permission on the pin, and cannot write the map.
    bool readOnly = info.Length() > 1 && info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
    LIBBPF_OPTS(bpf_obj_get_opts, gopts, .file_flags = readOnly ? (__u32)BPF_F_RDONLY : 0u);
    int fd = bpf_obj_get_opts(path.c_str(), &gopts);
    if (fd < 0) ThrowErrno(env, "bpf_obj_get", fd);
    bpf_map_info mi;
    std::memset(&mi, 0, sizeof(mi));
    uint32_t len = sizeof(mi);
    int err = bpf_obj_get_info_by_fd(fd, &mi, &len);
    if (err) {
      ::close(fd);
      ThrowErrno(env, "bpf_obj_get_info_by_fd", err);
    }
    MapInit init;
    init.fd = fd;
    init.name = mi.name;
    init.type = mi.type;
    init.keySize = mi.key_size;
    init.valueSize = mi.value_size;
    init.maxEntries = mi.max_entries;
    try {
      return Wrap(env, init);
    } catch (...) {
      ::close(fd);
      throw;
    }
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CheckOpen(env, "BpfMap.info");
    if (map_) return ObjectMapInfo(env, map_);
    return InfoObject(env, name_, type_, keySize_, valueSize_, maxEntries_, MapIdOfFd(fd_));
  }

  Napi::Value FdGetter(const Napi::CallbackInfo& info) {
    CheckOpen(info.Env(), "BpfMap.fd");
    return Napi::Number::New(info.Env(), map_ ? bpf_map__fd(map_) : fd_);
  }

  Napi::Value ValueSizeAllGetter(const Napi::CallbackInfo& info) {
    CheckOpen(info.Env(), "BpfMap.valueSizeAll");
    return Napi::Number::New(info.Env(), static_cast<double>(ValueSizeAll()));
  }

  Napi::Value Lookup(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto key = ArgBuffer(info, 0, "key");
    int fd = Fd(env, "bpf_map_lookup_elem");
    CheckLen(env, key.Length(), KeySize(), "key");
    auto value = Napi::Buffer<uint8_t>::New(env, ValueSizeAll());
    int err = bpf_map_lookup_elem(fd, key.Data(), value.Data());
    if (err == -ENOENT) return env.Null();
    if (err) ThrowErrno(env, "bpf_map_lookup_elem", err);
    return value;
  }

  void Update(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto key = ArgBuffer(info, 0, "key");
    auto value = ArgBuffer(info, 1, "value");
    uint32_t flags = ArgU32(info, 2, "flags", BPF_ANY, true);
    int fd = Fd(env, "bpf_map_update_elem");
    CheckLen(env, key.Length(), KeySize(), "key");
    CheckLen(env, value.Length(), ValueSizeAll(), "value");
    int err = bpf_map_update_elem(fd, key.Data(), value.Data(), flags);
    if (err) ThrowErrno(env, "bpf_map_update_elem", err);
  }

  Napi::Value Delete(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto key = ArgBuffer(info, 0, "key");
    int fd = Fd(env, "bpf_map_delete_elem");
    CheckLen(env, key.Length(), KeySize(), "key");
    int err = bpf_map_delete_elem(fd, key.Data());
    if (err == -ENOENT) return Napi::Boolean::New(env, false);
    if (err) ThrowErrno(env, "bpf_map_delete_elem", err);
    return Napi::Boolean::New(env, true);
  }

  MapFacts Facts(Napi::Env env, const char* op) {
    MapFacts m;
    m.fd = Fd(env, op);
    m.ks = KeySize();
    m.vs = ValueSizeAll();
    m.maxEntries = MaxEntries();
    return m;
  }

  static void ThrowIf(Napi::Env env, const OpResult& r) {
    if (r.err) ThrowErrno(env, r.op, r.err, r.detail);
  }

  // A MapFacts whose fd is the worker's own (dup) so the map may be closed while the work runs.
  MapFacts WorkerFacts(Napi::Env env, const char* op) {
    MapFacts m = Facts(env, op);
    m.fd = ::dup(m.fd);
    if (m.fd < 0) ThrowErrno(env, "dup", errno);
    return m;
  }

  void UpdateBatch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto keys = ArgBuffer(info, 0, "keys");
    auto values = ArgBuffer(info, 1, "values");
    uint32_t count = ArgU32(info, 2, "count", 0, false);
    uint32_t flags = ArgU32(info, 3, "flags", BPF_ANY, true);
    MapFacts m = Facts(env, "bpf_map_update_batch");
    CheckLen(env, keys.Length(), m.ks * count, "keys");
    CheckLen(env, values.Length(), m.vs * count, "values");
    ThrowIf(env, UpdateMany(m, keys.Data(), values.Data(), count, flags));
  }

  Napi::Value DeleteBatch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto keys = ArgBuffer(info, 0, "keys");
    uint32_t count = ArgU32(info, 1, "count", 0, false);
    MapFacts m = Facts(env, "bpf_map_delete_batch");
    CheckLen(env, keys.Length(), m.ks * count, "keys");
    uint32_t deleted = 0;
    ThrowIf(env, DeleteMany(m, keys.Data(), count, deleted));
    return Napi::Number::New(env, deleted);
  }

  Napi::Value Entries(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    MapFacts m = Facts(env, "bpf_map_lookup_batch");
    std::vector<uint8_t> keys, values;
    uint32_t count = 0;
    ThrowIf(env, ReadAll(m, keys, values, count));
    return EntriesObject(env, keys, values, count);
  }

  Napi::Value EntriesAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto* w = new MapWorker(env, MapWorker::kRead, WorkerFacts(env, "bpf_map_lookup_batch"), {}, {}, 0, 0);
    auto p = w->Promise();
    w->Queue();
    return p;
  }

  Napi::Value UpdateBatchAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto keys = ArgBuffer(info, 0, "keys");
    auto values = ArgBuffer(info, 1, "values");
    uint32_t count = ArgU32(info, 2, "count", 0, false);
    uint32_t flags = ArgU32(info, 3, "flags", BPF_ANY, true);
    size_t ks = KeySize(), vs = ValueSizeAll();
    CheckOpen(env, "bpf_map_update_batch");
    CheckLen(env, keys.Length(), ks * count, "keys");
    CheckLen(env, values.Length(), vs * count, "values");
    auto* w = new MapWorker(env, MapWorker::kUpdate, WorkerFacts(env, "bpf_map_update_batch"),
                            std::vector<uint8_t>(keys.Data(), keys.Data() + keys.Length()),
                            std::vector<uint8_t>(values.Data(), values.Data() + values.Length()), count, flags);
    auto p = w->Promise();
    w->Queue();
    return p;
  }

  Napi::Value DeleteBatchAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto keys = ArgBuffer(info, 0, "keys");
    uint32_t count = ArgU32(info, 1, "count", 0, false);
    CheckOpen(env, "bpf_map_delete_batch");
    CheckLen(env, keys.Length(), KeySize() * count, "keys");
    auto* w = new MapWorker(env, MapWorker::kDelete, WorkerFacts(env, "bpf_map_delete_batch"),
                            std::vector<uint8_t>(keys.Data(), keys.Data() + keys.Length()), {}, count, 0);
    auto p = w->Promise();
    w->Queue();
    return p;
  }

  void Pin(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string path = ArgString(info, 0, "path");
    int fd = Fd(env, "bpf_obj_pin");
    int err = bpf_obj_pin(fd, path.c_str());
    if (err) ThrowErrno(env, "bpf_obj_pin", err);
  }

  void Close(const Napi::CallbackInfo&) {
    if (closed_) return;
    closed_ = true;
    if (owner_) {
      owner_.reset();  // the object keeps its map; this handle just stops working
      map_ = nullptr;
    } else if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }

  std::shared_ptr<ObjectState> owner_;
  bpf_map* map_ = nullptr;
  int fd_ = -1;
  bool closed_ = false;
  std::string name_;
  uint32_t type_ = 0, keySize_ = 0, valueSize_ = 0, maxEntries_ = 0;
};

}  // namespace

Napi::Function InitBpfMap(Napi::Env env) { return BpfMap::Init(env); }

Napi::Object NewObjectMap(Napi::Env env, std::shared_ptr<ObjectState> owner, bpf_map* map) {
  MapInit init;
  init.owner = std::move(owner);
  init.map = map;
  return BpfMap::Wrap(env, init);
}

}  // namespace bpx
