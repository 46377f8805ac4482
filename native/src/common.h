// Shared declarations of the bpfproxy addon: a thin node-addon-api layer over libbpf. No policy here.
#pragma once

#include <napi.h>

#include <cstring>
#include <memory>
#include <string>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

namespace bpx {

// ---- errors.cc -------------------------------------------------------------------------------------------

// errno name ("ENOENT"), including the kernel-internal ENOTSUPP (524) that batch ops can leak.
std::string ErrnoName(int err);

// A JS Error with code/errno/op; message "<op>: <strerror> (<code>)" plus optional detail lines.
Napi::Error MakeError(Napi::Env env, const std::string& op, int err, const std::string& detail = "");

// Throws MakeError. err may be negative (libbpf style) or positive.
[[noreturn]] void ThrowErrno(Napi::Env env, const std::string& op, int err, const std::string& detail = "");

// For use-after-close: a BpfError with code EBADF and a message saying which handle is closed.
[[noreturn]] void ThrowClosed(Napi::Env env, const std::string& op, const char* what);

// libbpf print callback plumbing: quiet unless BPFPROXY_LIBBPF_DEBUG=1, but remembers the last lines.
void InstallLibbpfPrint();
void ClearLibbpfLog();
std::string LibbpfLogTail(size_t maxLines);

// Zeroed libbpf opts struct with .sz set (LIBBPF_OPTS relies on C-only syntax).
template <typename T>
T Opts() {
  T o;
  std::memset(&o, 0, sizeof(o));
  o.sz = sizeof(o);
  return o;
}

// ---- argument helpers (the TS layer validates precisely; these only keep C++ memory-safe) -----------------

std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* name);
Napi::Buffer<uint8_t> ArgBuffer(const Napi::CallbackInfo& info, size_t i, const char* name);
uint32_t ArgU32(const Napi::CallbackInfo& info, size_t i, const char* name, uint32_t dflt, bool optional);
int32_t ArgI32(const Napi::CallbackInfo& info, size_t i, const char* name);

// ---- object.cc -------------------------------------------------------------------------------------------

// Shared ownership of a bpf_object: the BpfObject and every map/program handle it gave out hold one, so
// the object outlives its handles in memory, while close() marks it closed for all of them at once.
struct ObjectState {
  bpf_object* obj = nullptr;
  bool loaded = false;
  ~ObjectState();
  void Close();
  bool closed() const { return obj == nullptr; }
};

Napi::Function InitBpfObject(Napi::Env env);

// ---- map.cc ----------------------------------------------------------------------------------------------

Napi::Function InitBpfMap(Napi::Env env);
Napi::Object NewObjectMap(Napi::Env env, std::shared_ptr<ObjectState> owner, bpf_map* map);
bool IsPerCpuMapType(uint32_t type);
// MapInfo object of an object's map (id 0 before load).
Napi::Object ObjectMapInfo(Napi::Env env, bpf_map* map);

// ---- program.cc ------------------------------------------------------------------------------------------

Napi::Function InitBpfProgram(Napi::Env env);
Napi::Object NewObjectProgram(Napi::Env env, std::shared_ptr<ObjectState> owner, bpf_program* prog);
// ProgramInfo object from a program fd (name falls back to the kernel's, which is truncated to 15 chars).
Napi::Object ProgramInfoFromFd(Napi::Env env, int fd, const std::string& name, uint32_t type);

// ---- attach.cc / util.cc ---------------------------------------------------------------------------------

void InitAttach(Napi::Env env, Napi::Object exports);
void InitUtil(Napi::Env env, Napi::Object exports);
// ipvs.cc: generic netlink requests and libbpf feature probes.
void InitIpvs(Napi::Env env, Napi::Object exports);
// ringbuf.cc: ring buffer consumer (bpfproxy monitor).
void InitRingbuf(Napi::Env env, Napi::Object exports);

// Constructors kept per addon instance (worker threads load their own copy).
struct AddonData {
  Napi::FunctionReference mapCtor;
  Napi::FunctionReference programCtor;
};
AddonData* Data(Napi::Env env);

}  // namespace bpx
