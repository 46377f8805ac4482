// Generic netlink requests (used for IPVS) over libnl-genl, and libbpf feature probes. The addon only
// moves bytes: the TS layer (src/dataplane/ipvs/netlink.ts) encodes and decodes the attributes.
#include "common.h"

#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>
#include <netlink/netlink.h>

#include <cerrno>
#include <vector>

namespace bpx {
namespace {

struct Collected {
  std::vector<std::string> payloads;  // attribute bytes after the genl header of each reply
  int err = 0;                        // positive errno from an NLMSG_ERROR, 0 if none
};

int OnValid(struct nl_msg* msg, void* arg) {
  auto* c = static_cast<Collected*>(arg);
  struct nlmsghdr* h = nlmsg_hdr(msg);
  int len = genlmsg_attrlen(static_cast<genlmsghdr*>(nlmsg_data(h)), 0);
  c->payloads.emplace_back(reinterpret_cast<const char*>(genlmsg_attrdata(static_cast<genlmsghdr*>(nlmsg_data(h)), 0)),
                           len);
  return NL_OK;
}

// Keeps the kernel's errno exactly (libnl would fold it into its own NLE_* codes).
int OnError(struct sockaddr_nl*, struct nlmsgerr* e, void* arg) {
  static_cast<Collected*>(arg)->err = -e->error;
  return NL_STOP;
}

int OnAck(struct nl_msg*, void* arg) { return NL_STOP; }

struct SockGuard {
  nl_sock* s = nl_socket_alloc();
  ~SockGuard() {
    if (s) nl_socket_free(s);
  }
};
struct MsgGuard {
  nl_msg* m = nlmsg_alloc();
  ~MsgGuard() {
    if (m) nlmsg_free(m);
  }
};

// genlRequest(family, version, cmd, dump, payload) → Buffer[] (one per reply message).
Napi::Value GenlRequest(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string family = ArgString(info, 0, "family");
  uint32_t version = ArgU32(info, 1, "version", 0, false);
  uint32_t cmd = ArgU32(info, 2, "cmd", 0, false);
  bool dump = info.Length() > 3 && info[3].ToBoolean();
  Napi::Buffer<uint8_t> payload = ArgBuffer(info, 4, "payload");

  SockGuard sk;
  if (!sk.s) ThrowErrno(env, "nl_socket_alloc", ENOMEM);
  if (int r = genl_connect(sk.s); r < 0) ThrowErrno(env, "genl_connect", EPROTONOSUPPORT, nl_geterror(r));
  int fam = genl_ctrl_resolve(sk.s, family.c_str());
  if (fam < 0)
    ThrowErrno(env, "genl_ctrl_resolve", ENOENT, "generic netlink family " + family + ": " + nl_geterror(fam));

  MsgGuard msg;
  if (!msg.m) ThrowErrno(env, "nlmsg_alloc", ENOMEM);
  if (!genlmsg_put(msg.m, NL_AUTO_PORT, NL_AUTO_SEQ, fam, 0, dump ? NLM_F_DUMP : 0, cmd, version))
    ThrowErrno(env, "genlmsg_put", ENOMEM);
  if (payload.Length() > 0 && nlmsg_append(msg.m, payload.Data(), payload.Length(), NLMSG_ALIGNTO) < 0)
    ThrowErrno(env, "nlmsg_append", ENOMEM);

  Collected c;
  nl_socket_modify_cb(sk.s, NL_CB_VALID, NL_CB_CUSTOM, OnValid, &c);
  nl_socket_modify_cb(sk.s, NL_CB_ACK, NL_CB_CUSTOM, OnAck, &c);
  nl_socket_modify_err_cb(sk.s, NL_CB_CUSTOM, OnError, &c);
  // Auto-ack (libnl's default) asks for an ACK on non-dump requests, so every request ends in ACK, DONE or error.
  if (int r = nl_send_auto(sk.s, msg.m); r < 0) ThrowErrno(env, "nl_send_auto", EIO, nl_geterror(r));
  int r = nl_recvmsgs_default(sk.s);
  if (c.err) ThrowErrno(env, "genl " + family + " cmd " + std::to_string(cmd), c.err);
  if (r < 0) ThrowErrno(env, "nl_recvmsgs", EIO, nl_geterror(r));

  Napi::Array out = Napi::Array::New(env, c.payloads.size());
  for (size_t i = 0; i < c.payloads.size(); i++)
    out.Set(i, Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(c.payloads[i].data()),
                                           c.payloads[i].size()));
  return out;
}

// libbpf's feature probes: 1 supported, 0 not, negative errno when the probe itself failed.
Napi::Value ProbeProgType(const Napi::CallbackInfo& info) {
  uint32_t t = ArgU32(info, 0, "progType", 0, false);
  return Napi::Number::New(info.Env(), libbpf_probe_bpf_prog_type(static_cast<bpf_prog_type>(t), nullptr));
}
Napi::Value ProbeMapType(const Napi::CallbackInfo& info) {
  uint32_t t = ArgU32(info, 0, "mapType", 0, false);
  return Napi::Number::New(info.Env(), libbpf_probe_bpf_map_type(static_cast<bpf_map_type>(t), nullptr));
}
Napi::Value ProbeHelper(const Napi::CallbackInfo& info) {
  uint32_t p = ArgU32(info, 0, "progType", 0, false);
  uint32_t h = ArgU32(info, 1, "helper", 0, false);
  return Napi::Number::New(
      info.Env(), libbpf_probe_bpf_helper(static_cast<bpf_prog_type>(p), static_cast<bpf_func_id>(h), nullptr));
}

}  // namespace

void InitIpvs(Napi::Env env, Napi::Object exports) {
  exports.Set("genlRequest", Napi::Function::New<GenlRequest>(env, "genlRequest"));
  exports.Set("probeProgType", Napi::Function::New<ProbeProgType>(env, "probeProgType"));
  exports.Set("probeMapType", Napi::Function::New<ProbeMapType>(env, "probeMapType"));
  exports.Set("probeHelper", Napi::Function::New<ProbeHelper>(env, "probeHelper"));
}

}  // namespace bpx
