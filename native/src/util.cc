// Small host helpers: interface index, CPU count, bpffs checks and mounts.
#include "common.h"

#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>
#include <sys/mount.h>
#include <sys/statfs.h>

#include <cerrno>

namespace bpx {
namespace {

constexpr unsigned long kBpfFsMagic = 0xcafe4a11;

Napi::Value IfNameToIndex(const Napi::CallbackInfo& info) {
  std::string name = ArgString(info, 0, "name");
  return Napi::Number::New(info.Env(), if_nametoindex(name.c_str()));  // 0 when absent
}

Napi::Value PossibleCpus(const Napi::CallbackInfo& info) {
  int n = libbpf_num_possible_cpus();
  if (n < 0) ThrowErrno(info.Env(), "libbpf_num_possible_cpus", n);
  return Napi::Number::New(info.Env(), n);
}

Napi::Value IsBpffs(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  struct statfs st;
  if (statfs(path.c_str(), &st) != 0) ThrowErrno(info.Env(), "statfs", errno);
  return Napi::Boolean::New(info.Env(), static_cast<unsigned long>(st.f_type) == kBpfFsMagic);
}

void MountBpffs(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  // mode=0700: pins hold live state; only root should reach them.
  if (mount("bpf", path.c_str(), "bpf", 0, "mode=0700") != 0) ThrowErrno(info.Env(), "mount", errno);
}

void Umount(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  if (umount2(path.c_str(), MNT_DETACH) != 0) ThrowErrno(info.Env(), "umount2", errno);
}

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

// The cookie of the caller's network namespace, as bpf_get_netns_cookie() reports it (Linux >= 5.14).
Napi::Value NetnsCookie(const Napi::CallbackInfo& info) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowErrno(info.Env(), "socket", errno);
  uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  int rc = getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len);
  int err = errno;
  close(fd);
  if (rc != 0) ThrowErrno(info.Env(), "getsockopt(SO_NETNS_COOKIE)", err);
  return Napi::BigInt::New(info.Env(), cookie);
}

}  // namespace

void InitUtil(Napi::Env env, Napi::Object exports) {
  exports.Set("ifNameToIndex", Napi::Function::New<IfNameToIndex>(env, "ifNameToIndex"));
  exports.Set("possibleCpus", Napi::Function::New<PossibleCpus>(env, "possibleCpus"));
  exports.Set("isBpffs", Napi::Function::New<IsBpffs>(env, "isBpffs"));
  exports.Set("mountBpffs", Napi::Function::New<MountBpffs>(env, "mountBpffs"));
  exports.Set("umount", Napi::Function::New<Umount>(env, "umount"));
  exports.Set("netnsCookie", Napi::Function::New<NetnsCookie>(env, "netnsCookie"));
}

}  // namespace bpx
