// Module entry: classes, functions and constants of the bpfproxy addon (contract: native/index.d.ts).
#include "common.h"

#include <linux/if_link.h>
#include <linux/pkt_cls.h>

namespace bpx {

AddonData* Data(Napi::Env env) { return env.GetInstanceData<AddonData>(); }

static Napi::Object Constants(Napi::Env env) {
  Napi::Object c = Napi::Object::New(env);
  auto set = [&](const char* k, double v) { c.Set(k, Napi::Number::New(env, v)); };
  set("BPF_ANY", BPF_ANY);
  set("BPF_NOEXIST", BPF_NOEXIST);
  set("BPF_EXIST", BPF_EXIST);
  set("XDP_FLAGS_SKB_MODE", XDP_FLAGS_SKB_MODE);
  set("XDP_FLAGS_DRV_MODE", XDP_FLAGS_DRV_MODE);
  set("XDP_FLAGS_UPDATE_IF_NOEXIST", XDP_FLAGS_UPDATE_IF_NOEXIST);
  set("XDP_FLAGS_REPLACE", XDP_FLAGS_REPLACE);
  set("BPF_CGROUP_INET_INGRESS", BPF_CGROUP_INET_INGRESS);
  set("BPF_CGROUP_INET_EGRESS", BPF_CGROUP_INET_EGRESS);
  set("BPF_CGROUP_INET4_CONNECT", BPF_CGROUP_INET4_CONNECT);
  set("BPF_CGROUP_UDP4_SENDMSG", BPF_CGROUP_UDP4_SENDMSG);
  set("BPF_CGROUP_UDP4_RECVMSG", BPF_CGROUP_UDP4_RECVMSG);
  set("BPF_CGROUP_INET4_GETPEERNAME", BPF_CGROUP_INET4_GETPEERNAME);
  set("BPF_CGROUP_INET6_CONNECT", BPF_CGROUP_INET6_CONNECT);
  set("BPF_CGROUP_UDP6_SENDMSG", BPF_CGROUP_UDP6_SENDMSG);
  set("BPF_CGROUP_UDP6_RECVMSG", BPF_CGROUP_UDP6_RECVMSG);
  set("BPF_CGROUP_INET6_GETPEERNAME", BPF_CGROUP_INET6_GETPEERNAME);
  set("BPF_F_ALLOW_MULTI", BPF_F_ALLOW_MULTI);
  set("BPF_F_ALLOW_OVERRIDE", BPF_F_ALLOW_OVERRIDE);
  set("TC_ACT_OK", TC_ACT_OK);
  set("TC_ACT_SHOT", TC_ACT_SHOT);
  set("TC_ACT_REDIRECT", TC_ACT_REDIRECT);
  set("XDP_PASS", XDP_PASS);
  set("XDP_DROP", XDP_DROP);
  set("XDP_TX", XDP_TX);
  set("BPF_MAP_TYPE_HASH", BPF_MAP_TYPE_HASH);
  set("BPF_MAP_TYPE_ARRAY", BPF_MAP_TYPE_ARRAY);
  set("BPF_MAP_TYPE_PERCPU_ARRAY", BPF_MAP_TYPE_PERCPU_ARRAY);
  set("BPF_MAP_TYPE_LRU_HASH", BPF_MAP_TYPE_LRU_HASH);
  c.Freeze();
  return c;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  InstallLibbpfPrint();

  auto* data = new AddonData();
  env.SetInstanceData(data);
  Napi::Function map = InitBpfMap(env);
  Napi::Function program = InitBpfProgram(env);
  data->mapCtor = Napi::Persistent(map);
  data->programCtor = Napi::Persistent(program);

  exports.Set("BpfObject", InitBpfObject(env));
  exports.Set("BpfMap", map);
  exports.Set("BpfProgram", program);
  InitAttach(env, exports);
  InitUtil(env, exports);
  InitIpvs(env, exports);
  InitRingbuf(env, exports);
  exports.Set("constants", Constants(env));
  return exports;
}

}  // namespace bpx

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return bpx::Init(env, exports); }

NODE_API_MODULE(bpfproxy, InitModule)
