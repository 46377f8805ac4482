// Attach points: tc (clsact, direct action), XDP, cgroup; plus program lookup by id.
#include "common.h"

#include <fcntl.h>
#include <linux/if_link.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

namespace bpx {
namespace {

bpf_tc_attach_point ArgDirection(const Napi::CallbackInfo& info, size_t i) {
  std::string d = ArgString(info, i, "direction");
  if (d == "ingress") return BPF_TC_INGRESS;
  if (d == "egress") return BPF_TC_EGRESS;
  throw Napi::TypeError::New(info.Env(), "direction must be \"ingress\" or \"egress\"");
}

struct TcArgs {
  uint32_t handle = 1, priority = 1;
  bool replace = true;
};

TcArgs ArgTcOptions(const Napi::CallbackInfo& info, size_t i) {
  TcArgs a;
  if (i >= info.Length() || info[i].IsUndefined()) return a;
  Napi::Env env = info.Env();
  if (!info[i].IsObject()) throw Napi::TypeError::New(env, "options must be an object");
  Napi::Object o = info[i].As<Napi::Object>();
  // Zero is rejected here so that an EINVAL from the kernel can only mean "no clsact qdisc".
  auto u32 = [&](const char* key, uint32_t dflt, uint32_t max) -> uint32_t {
    Napi::Value v = o.Get(key);
    if (v.IsUndefined()) return dflt;
    if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string("options.") + key + " must be a number");
    double d = v.As<Napi::Number>().DoubleValue();
    if (!(d >= 1 && d <= max) || d != static_cast<double>(static_cast<uint32_t>(d)))
      throw Napi::RangeError::New(env, std::string("options.") + key + " out of range");
    return static_cast<uint32_t>(d);
  };
  a.handle = u32("handle", 1, 0xffffffffu);
  a.priority = u32("priority", 1, 0xffff);  // tc priorities are 16 bits
  Napi::Value r = o.Get("replace");
  if (!r.IsUndefined()) {
    if (!r.IsBoolean()) throw Napi::TypeError::New(env, "options.replace must be a boolean");
    a.replace = r.As<Napi::Boolean>().Value();
  }
  return a;
}

bpf_tc_hook TcHook(uint32_t ifindex, bpf_tc_attach_point where) {
  auto hook = Opts<bpf_tc_hook>();
  hook.ifindex = static_cast<int>(ifindex);
  hook.attach_point = where;
  return hook;
}

void TcAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t ifindex = ArgU32(info, 0, "ifindex", 0, false);
  auto where = ArgDirection(info, 1);
  int progFd = ArgI32(info, 2, "progFd");
  TcArgs a = ArgTcOptions(info, 3);
  bpf_tc_hook hook = TcHook(ifindex, where);
  int err = bpf_tc_hook_create(&hook);  // adds clsact; EEXIST when it is there already
  if (err && err != -EEXIST) ThrowErrno(env, "bpf_tc_hook_create", err);
  auto opts = Opts<bpf_tc_opts>();
  opts.prog_fd = progFd;
  opts.handle = a.handle;
  opts.priority = a.priority;
  opts.flags = a.replace ? BPF_TC_F_REPLACE : 0;
  err = bpf_tc_attach(&hook, &opts);
  if (err) ThrowErrno(env, "bpf_tc_attach", err);
}

// The filter (ifindex, direction, handle/priority) named by detach and query calls.
struct TcFilter {
  bpf_tc_hook hook;
  bpf_tc_opts opts;
};

TcFilter ArgTcFilter(const Napi::CallbackInfo& info) {
  uint32_t ifindex = ArgU32(info, 0, "ifindex", 0, false);
  auto where = ArgDirection(info, 1);
  TcArgs a = ArgTcOptions(info, 2);
  TcFilter f{TcHook(ifindex, where), Opts<bpf_tc_opts>()};
  f.opts.handle = a.handle;
  f.opts.priority = a.priority;
  return f;
}

Napi::Value TcDetach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TcFilter f = ArgTcFilter(info);
  int err = bpf_tc_detach(&f.hook, &f.opts);
  // ENOENT: no such filter; EINVAL (arguments being valid): no clsact qdisc at all.
  if (err == -ENOENT || err == -EINVAL) return Napi::Boolean::New(env, false);
  if (err) ThrowErrno(env, "bpf_tc_detach", err);
  return Napi::Boolean::New(env, true);
}

Napi::Value TcQuery(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TcFilter f = ArgTcFilter(info);
  int err = bpf_tc_query(&f.hook, &f.opts);
  if (err == -ENOENT || err == -EINVAL) return env.Null();
  if (err) ThrowErrno(env, "bpf_tc_query", err);
  Napi::Object r = Napi::Object::New(env);
  r.Set("progId", Napi::Number::New(env, f.opts.prog_id));
  return r;
}

Napi::Value TcHookDestroy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t ifindex = ArgU32(info, 0, "ifindex", 0, false);
  // INGRESS|EGRESS together is libbpf's way of saying "the whole clsact qdisc".
  bpf_tc_hook hook = TcHook(ifindex, static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS));
  int err = bpf_tc_hook_destroy(&hook);
  // Deleting an absent clsact answers ENOENT on some kernels and EINVAL on others.
  if (err == -ENOENT || err == -EINVAL) return Napi::Boolean::New(env, false);
  if (err) ThrowErrno(env, "bpf_tc_hook_destroy", err);
  return Napi::Boolean::New(env, true);
}

// oldProgId (optional, nonzero): replace exactly that program (XDP_FLAGS_REPLACE with its fd), so a program
// someone else attached in between is never replaced (EEXIST instead).
void XdpAttach(const Napi::CallbackInfo& info) {
  uint32_t ifindex = ArgU32(info, 0, "ifindex", 0, false);
  int progFd = ArgI32(info, 1, "progFd");
  uint32_t flags = ArgU32(info, 2, "flags", 0, true);
  uint32_t oldProgId = ArgU32(info, 3, "oldProgId", 0, true);
  LIBBPF_OPTS(bpf_xdp_attach_opts, opts);
  int oldFd = -1;
  if (oldProgId) {
    oldFd = bpf_prog_get_fd_by_id(oldProgId);
    if (oldFd < 0) ThrowErrno(info.Env(), "bpf_prog_get_fd_by_id", oldFd);
    opts.old_prog_fd = oldFd;
    flags |= XDP_FLAGS_REPLACE;
  }
  int err = bpf_xdp_attach(static_cast<int>(ifindex), progFd, flags, oldProgId ? &opts : nullptr);
  if (oldFd >= 0) ::close(oldFd);
  if (err) ThrowErrno(info.Env(), "bpf_xdp_attach", err);
}

void XdpDetach(const Napi::CallbackInfo& info) {
  uint32_t ifindex = ArgU32(info, 0, "ifindex", 0, false);
  uint32_t flags = ArgU32(info, 1, "flags", 0, true);
  int err = bpf_xdp_detach(static_cast<int>(ifindex), flags, nullptr);
  if (err) ThrowErrno(info.Env(), "bpf_xdp_detach", err);
}

Napi::Value XdpQuery(const Napi::CallbackInfo& info) {
  uint32_t ifindex = ArgU32(info, 0, "ifindex", 0, false);
  uint32_t flags = ArgU32(info, 1, "flags", 0, true);
  uint32_t id = 0;
  int err = bpf_xdp_query_id(static_cast<int>(ifindex), static_cast<int>(flags), &id);
  if (err) ThrowErrno(info.Env(), "bpf_xdp_query_id", err);
  return Napi::Number::New(info.Env(), id);
}

// An fd on the cgroup directory, closed on scope exit.
struct CgroupFd {
  int fd;
  CgroupFd(Napi::Env env, const std::string& path) {
    fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) ThrowErrno(env, "open(" + path + ")", errno);
  }
  ~CgroupFd() { ::close(fd); }
};

void CgroupAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "cgroupPath");
  int progFd = ArgI32(info, 1, "progFd");
  uint32_t type = ArgU32(info, 2, "attachType", 0, false);
  uint32_t flags = ArgU32(info, 3, "flags", 0, true);
  CgroupFd cg(env, path);
  int err = bpf_prog_attach(progFd, cg.fd, static_cast<bpf_attach_type>(type), flags);
  if (err) ThrowErrno(env, "bpf_prog_attach", err);
}

void CgroupDetach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "cgroupPath");
  int progFd = ArgI32(info, 1, "progFd");
  uint32_t type = ArgU32(info, 2, "attachType", 0, false);
  CgroupFd cg(env, path);
  int err = bpf_prog_detach2(progFd, cg.fd, static_cast<bpf_attach_type>(type));
  if (err) ThrowErrno(env, "bpf_prog_detach2", err);
}

Napi::Value CgroupQuery(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "cgroupPath");
  uint32_t type = ArgU32(info, 1, "attachType", 0, false);
  CgroupFd cg(env, path);
  std::vector<uint32_t> ids(64);
  for (;;) {
    uint32_t cnt = ids.size(), attachFlags = 0;
    int err = bpf_prog_query(cg.fd, static_cast<bpf_attach_type>(type), 0, &attachFlags, ids.data(), &cnt);
    if (err == -ENOSPC && ids.size() < (1u << 20)) {  // more attached than room: the kernel tells how many
      ids.resize(cnt > ids.size() ? cnt : ids.size() * 2);
      continue;
    }
    if (err) ThrowErrno(env, "bpf_prog_query", err);
    Napi::Array out = Napi::Array::New(env, cnt);
    for (uint32_t i = 0; i < cnt; i++) out.Set(i, Napi::Number::New(env, ids[i]));
    return out;
  }
}

Napi::Value ProgramInfoById(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t id = ArgU32(info, 0, "id", 0, false);
  int fd = bpf_prog_get_fd_by_id(id);
  if (fd == -ENOENT) return env.Null();
  if (fd < 0) ThrowErrno(env, "bpf_prog_get_fd_by_id", fd);
  Napi::Object o = ProgramInfoFromFd(env, fd, "", 0);
  ::close(fd);
  return o;
}

}  // namespace

void InitAttach(Napi::Env env, Napi::Object exports) {
  exports.Set("tcAttach", Napi::Function::New<TcAttach>(env, "tcAttach"));
  exports.Set("tcDetach", Napi::Function::New<TcDetach>(env, "tcDetach"));
  exports.Set("tcQuery", Napi::Function::New<TcQuery>(env, "tcQuery"));
  exports.Set("tcHookDestroy", Napi::Function::New<TcHookDestroy>(env, "tcHookDestroy"));
  exports.Set("xdpAttach", Napi::Function::New<XdpAttach>(env, "xdpAttach"));
  exports.Set("xdpDetach", Napi::Function::New<XdpDetach>(env, "xdpDetach"));
  exports.Set("xdpQuery", Napi::Function::New<XdpQuery>(env, "xdpQuery"));
  exports.Set("cgroupAttach", Napi::Function::New<CgroupAttach>(env, "cgroupAttach"));
  exports.Set("cgroupDetach", Napi::Function::New<CgroupDetach>(env, "cgroupDetach"));
  exports.Set("cgroupQuery", Napi::Function::New<CgroupQuery>(env, "cgroupQuery"));
  exports.Set("programInfoById", Napi::Function::New<ProgramInfoById>(env, "programInfoById"));
}

}  // namespace bpx
