// BpfObject: bpf_object__open_file / load / lookup of maps and programs / close.
#include "common.h"

#include <unistd.h>

#include <cerrno>

namespace bpx {

ObjectState::~ObjectState() { Close(); }

void ObjectState::Close() {
  if (obj) bpf_object__close(obj);
  obj = nullptr;
}

namespace {

class BpfObject : public Napi::ObjectWrap<BpfObject> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "BpfObject",
                       {
                           InstanceMethod<&BpfObject::Load>("load"),
                           InstanceMethod<&BpfObject::SetMapMaxEntries>("setMapMaxEntries"),
                           InstanceMethod<&BpfObject::SetMapPinPath>("setMapPinPath"),
                           InstanceMethod<&BpfObject::ProgramNames>("programNames"),
                           InstanceMethod<&BpfObject::Maps>("maps"),
                           InstanceMethod<&BpfObject::Map>("map"),
                           InstanceMethod<&BpfObject::Program>("program"),
                           InstanceMethod<&BpfObject::Close>("close"),
                       });
  }

  BpfObject(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BpfObject>(info) {
    Napi::Env env = info.Env();
    if (!info.IsConstructCall()) throw Napi::TypeError::New(env, "BpfObject must be called with new");
    std::string path = ArgString(info, 0, "path");
    std::string pinRoot;
    bool hasPinRoot = false;
    bool noPin = false;
    if (info.Length() > 1 && !info[1].IsUndefined()) {
      if (!info[1].IsObject()) throw Napi::TypeError::New(env, "options must be an object");
      Napi::Value pr = info[1].As<Napi::Object>().Get("pinRoot");
      if (!pr.IsUndefined()) {
        if (!pr.IsString()) throw Napi::TypeError::New(env, "options.pinRoot must be a string");
        pinRoot = pr.As<Napi::String>().Utf8Value();
        hasPinRoot = true;
      }
      Napi::Value np = info[1].As<Napi::Object>().Get("noPin");
      if (!np.IsUndefined()) {
        if (!np.IsBoolean()) throw Napi::TypeError::New(env, "options.noPin must be a boolean");
        noPin = np.As<Napi::Boolean>().Value();
      }
    }
    auto opts = Opts<bpf_object_open_opts>();
    if (hasPinRoot) opts.pin_root_path = pinRoot.c_str();
    ClearLibbpfLog();
    errno = 0;
    bpf_object* obj = bpf_object__open_file(path.c_str(), &opts);
    if (!obj) ThrowErrno(env, "bpf_object__open_file", errno, LibbpfLogTail(10));
    if (noPin) {
      // A NULL pin path: load creates the map afresh and neither reuses nor pins it.
      bpf_map* map;
      bpf_object__for_each_map(map, obj) bpf_map__set_pin_path(map, nullptr);
    }
    state_ = std::make_shared<ObjectState>();
    state_->obj = obj;
  }

 private:
  bpf_object* Obj(Napi::Env env, const char* op) {
    if (state_->closed()) ThrowClosed(env, op, "BpfObject");
    return state_->obj;
  }

  void Load(const Napi::CallbackInfo& info) {
    bpf_object* obj = Obj(info.Env(), "bpf_object__load");
    ReusePinnedDevmaps(obj);
    ClearLibbpfLog();
    int err = bpf_object__load(obj);
    // The verifier's complaint is the useful part of a failed load: append the tail of libbpf's log.
    if (err) ThrowErrno(info.Env(), "bpf_object__load", err, LibbpfLogTail(30));
    state_->loaded = true;
  }

  // The kernel adds BPF_F_RDONLY_PROG to every DEVMAP's flags (it may not be asked for at creation), so
  // libbpf would find a pinned one incompatible with the object's definition and refuse to reuse it. Declared
  // here for a DEVMAP whose pin exists, so the pin is reused as any other map's.
  static void ReusePinnedDevmaps(bpf_object* obj) {
    bpf_map* map;
    bpf_object__for_each_map(map, obj) {
      bpf_map_type t = bpf_map__type(map);
      const char* pin = bpf_map__pin_path(map);
      if ((t == BPF_MAP_TYPE_DEVMAP || t == BPF_MAP_TYPE_DEVMAP_HASH) && pin && access(pin, F_OK) == 0)
        bpf_map__set_map_flags(map, bpf_map__map_flags(map) | BPF_F_RDONLY_PROG);
    }
  }

  bpf_map* FindMap(Napi::Env env, const std::string& name, const char* op) {
    bpf_object* obj = Obj(env, op);
    bpf_map* map = bpf_object__find_map_by_name(obj, name.c_str());
    if (!map) ThrowErrno(env, op, ENOENT, "no map named '" + name + "'");
    return map;
  }

  // Both only work between open and load (libbpf answers EBUSY after load).
  void SetMapMaxEntries(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name = ArgString(info, 0, "name");
    uint32_t n = ArgU32(info, 1, "maxEntries", 0, false);
    int err = bpf_map__set_max_entries(FindMap(env, name, "bpf_map__set_max_entries"), n);
    if (err) ThrowErrno(env, "bpf_map__set_max_entries", err, "map '" + name + "'");
  }

  void SetMapPinPath(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name = ArgString(info, 0, "name");
    std::string path = ArgString(info, 1, "path");
    int err = bpf_map__set_pin_path(FindMap(env, name, "bpf_map__set_pin_path"), path.c_str());
    if (err) ThrowErrno(env, "bpf_map__set_pin_path", err, "map '" + name + "'");
  }

  Napi::Value ProgramNames(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bpf_object* obj = Obj(env, "BpfObject.programNames");
    Napi::Array out = Napi::Array::New(env);
    bpf_program* prog;
    uint32_t i = 0;
    bpf_object__for_each_program(prog, obj) out.Set(i++, Napi::String::New(env, bpf_program__name(prog)));
    return out;
  }

  Napi::Value Maps(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bpf_object* obj = Obj(env, "BpfObject.maps");
    Napi::Array out = Napi::Array::New(env);
    bpf_map* map;
    uint32_t i = 0;
    bpf_object__for_each_map(map, obj) out.Set(i++, ObjectMapInfo(env, map));
    return out;
  }

  Napi::Value Map(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name = ArgString(info, 0, "name");
    bpf_object* obj = Obj(env, "bpf_object__find_map_by_name");
    bpf_map* map = bpf_object__find_map_by_name(obj, name.c_str());
    if (!map) ThrowErrno(env, "bpf_object__find_map_by_name", ENOENT, "no map named '" + name + "'");
    return NewObjectMap(env, state_, map);
  }

  Napi::Value Program(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name = ArgString(info, 0, "name");
    bpf_object* obj = Obj(env, "bpf_object__find_program_by_name");
    bpf_program* prog = bpf_object__find_program_by_name(obj, name.c_str());
    if (!prog) ThrowErrno(env, "bpf_object__find_program_by_name", ENOENT, "no program named '" + name + "'");
    return NewObjectProgram(env, state_, prog);
  }

  void Close(const Napi::CallbackInfo&) { state_->Close(); }

  std::shared_ptr<ObjectState> state_;
};

}  // namespace

Napi::Function InitBpfObject(Napi::Env env) { return BpfObject::Init(env); }

}  // namespace bpx
