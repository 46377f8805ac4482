// Ring buffer consumer for `bpfproxy monitor`: opens a pinned BPF_MAP_TYPE_RINGBUF and hands its
// records to JS as Buffers. Synchronous poll with a timeout: the monitor is a CLI that does nothing
// else, so blocking its thread for a bounded time is simpler than an async worker.
#include "common.h"

#include <unistd.h>

#include <cerrno>
#include <map>
#include <vector>

namespace bpx {
namespace {

struct Consumer {
  int fd = -1;
  ring_buffer* rb = nullptr;
  std::vector<std::vector<uint8_t>> batch;
  uint32_t max = 0;
};

std::map<uint32_t, Consumer*> consumers;
uint32_t nextHandle = 1;

int OnRecord(void* ctx, void* data, size_t size) {
  auto* c = static_cast<Consumer*>(ctx);
  const auto* p = static_cast<const uint8_t*>(data);
  c->batch.emplace_back(p, p + size);
  // A positive return stops this poll; the rest stays in the ring for the next one.
  return c->batch.size() >= c->max ? 1 : 0;
}

Consumer* Find(const Napi::CallbackInfo& info, const char* op) {
  uint32_t h = ArgU32(info, 0, "handle", 0, false);
  auto it = consumers.find(h);
  if (it == consumers.end()) ThrowClosed(info.Env(), op, "ring buffer");
  return it->second;
}

Napi::Value RingbufOpen(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) ThrowErrno(info.Env(), "bpf_obj_get", errno, path);
  auto* c = new Consumer();
  c->fd = fd;
  c->rb = ring_buffer__new(fd, OnRecord, c, nullptr);
  if (!c->rb) {
    int err = errno;
    close(fd);
    delete c;
    ThrowErrno(info.Env(), "ring_buffer__new", err, path);
  }
  uint32_t h = nextHandle++;
  consumers[h] = c;
  return Napi::Number::New(info.Env(), h);
}

Napi::Value RingbufPoll(const Napi::CallbackInfo& info) {
  Consumer* c = Find(info, "ring_buffer__poll");
  int timeout = ArgI32(info, 1, "timeoutMs");
  c->max = ArgU32(info, 2, "maxRecords", 4096, true);
  c->batch.clear();
  int n = ring_buffer__poll(c->rb, timeout);
  if (n < 0 && n != -EINTR) ThrowErrno(info.Env(), "ring_buffer__poll", n);
  Napi::Array out = Napi::Array::New(info.Env(), c->batch.size());
  for (size_t i = 0; i < c->batch.size(); i++)
    out.Set(i, Napi::Buffer<uint8_t>::Copy(info.Env(), c->batch[i].data(), c->batch[i].size()));
  c->batch.clear();
  return out;
}

void RingbufClose(const Napi::CallbackInfo& info) {
  uint32_t h = ArgU32(info, 0, "handle", 0, false);
  auto it = consumers.find(h);
  if (it == consumers.end()) return;
  ring_buffer__free(it->second->rb);
  close(it->second->fd);
  delete it->second;
  consumers.erase(it);
}

}  // namespace

void InitRingbuf(Napi::Env env, Napi::Object exports) {
  exports.Set("ringbufOpen", Napi::Function::New<RingbufOpen>(env, "ringbufOpen"));
  exports.Set("ringbufPoll", Napi::Function::New<RingbufPoll>(env, "ringbufPoll"));
  exports.Set("ringbufClose", Napi::Function::New<RingbufClose>(env, "ringbufClose"));
}

}  // namespace bpx
