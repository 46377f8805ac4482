// BpfProgram: a program of a BpfObject; BPF_PROG_TEST_RUN off the event loop.
#include "common.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <vector>

namespace bpx {

Napi::Object ProgramInfoFromFd(Napi::Env env, int fd, const std::string& name, uint32_t type) {
  bpf_prog_info pi;
  std::memset(&pi, 0, sizeof(pi));
  if (fd >= 0) {
    uint32_t len = sizeof(pi);
    if (bpf_obj_get_info_by_fd(fd, &pi, &len))
      std::memset(&pi, 0, sizeof(pi));
    else
      type = pi.type;
  }
  char tag[2 * BPF_TAG_SIZE + 1];
  for (int i = 0; i < BPF_TAG_SIZE; i++) snprintf(tag + 2 * i, 3, "%02x", pi.tag[i]);
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", name.empty() ? std::string(pi.name) : name);
  o.Set("type", type);
  o.Set("id", pi.id);
  o.Set("tag", std::string(tag));
  // What the verifier and the JIT made of it (0 before load; verifiedInsns 0 before Linux 5.16).
  o.Set("verifiedInsns", pi.verified_insns);
  o.Set("xlatedInsns", pi.xlated_prog_len / 8);
  o.Set("jitedBytes", pi.jited_prog_len);
  return o;
}

namespace {

struct ProgramInit {
  std::shared_ptr<ObjectState> owner;
  bpf_program* prog = nullptr;
};

// Runs on a libuv worker with its own dup of the program fd, so closing the object meanwhile is harmless.
class TestRunWorker : public Napi::AsyncWorker {
 public:
  TestRunWorker(Napi::Env env, int fd, std::vector<uint8_t> data, std::vector<uint8_t> ctx, uint32_t repeat,
                uint32_t dataSizeOut)
      : Napi::AsyncWorker(env, "bpfproxy.testRun"),
        deferred_(Napi::Promise::Deferred::New(env)),
        fd_(fd),
        data_(std::move(data)),
        ctx_(std::move(ctx)),
        // The kernel writes its whole context struct back (ENOSPC when it does not fit): room for any.
        ctxOut_(ctx_.empty() ? 0 : 1024),
        out_(dataSizeOut),
        repeat_(repeat) {}

  ~TestRunWorker() override {
    if (fd_ >= 0) ::close(fd_);
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    auto opts = Opts<bpf_test_run_opts>();
    opts.data_in = data_.data();
    opts.data_size_in = data_.size();
    opts.data_out = out_.empty() ? nullptr : out_.data();
    opts.data_size_out = out_.size();
    if (!ctx_.empty()) {
      opts.ctx_in = ctx_.data();
      opts.ctx_size_in = ctx_.size();
      opts.ctx_out = ctxOut_.data();
      opts.ctx_size_out = ctxOut_.size();
    }
    opts.repeat = static_cast<int>(repeat_);
    err_ = bpf_prog_test_run_opts(fd_, &opts);
    retval_ = opts.retval;
    duration_ = opts.duration;
    outLen_ = opts.data_size_out < out_.size() ? opts.data_size_out : out_.size();
    ctxOutLen_ = opts.ctx_size_out < ctxOut_.size() ? opts.ctx_size_out : ctxOut_.size();
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (err_) {
      deferred_.Reject(MakeError(env, "bpf_prog_test_run_opts", err_).Value());
      return;
    }
    Napi::Object r = Napi::Object::New(env);
    r.Set("retval", Napi::Number::New(env, retval_));
    r.Set("data", Napi::Buffer<uint8_t>::Copy(env, out_.data(), outLen_));
    r.Set("durationNs", Napi::Number::New(env, duration_));
    // The context as the program left it (e.g. __sk_buff.mark), when one was given.
    if (!ctxOut_.empty()) r.Set("ctx", Napi::Buffer<uint8_t>::Copy(env, ctxOut_.data(), ctxOutLen_));
    deferred_.Resolve(r);
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  int fd_;
  std::vector<uint8_t> data_, ctx_, ctxOut_, out_;
  uint32_t repeat_;
  int err_ = 0;
  uint32_t retval_ = 0, duration_ = 0;
  size_t outLen_ = 0, ctxOutLen_ = 0;
};

class BpfProgram : public Napi::ObjectWrap<BpfProgram> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "BpfProgram",
                       {
                           InstanceAccessor<&BpfProgram::Name>("name"),
                           InstanceAccessor<&BpfProgram::FdGetter>("fd"),
                           InstanceAccessor<&BpfProgram::Info>("info"),
                           InstanceMethod<&BpfProgram::TestRun>("testRun"),
                           InstanceMethod<&BpfProgram::Pin>("pin"),
                           InstanceMethod<&BpfProgram::RunIter>("runIter"),
                       });
  }

  BpfProgram(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BpfProgram>(info) {
    if (info.Length() < 1 || !info[0].IsExternal())
      throw Napi::TypeError::New(info.Env(), "BpfProgram cannot be constructed directly; use BpfObject.program()");
    ProgramInit* init = info[0].As<Napi::External<ProgramInit>>().Data();
    owner_ = init->owner;
    prog_ = init->prog;
    name_ = bpf_program__name(prog_);
  }

  static Napi::Object Wrap(Napi::Env env, ProgramInit& init) {
    return Data(env)->programCtor.New({Napi::External<ProgramInit>::New(env, &init)});
  }

 private:
  void CheckOpen(Napi::Env env, const char* op) {
    if (owner_->closed()) ThrowClosed(env, op, "BpfObject");
  }

  int Fd(Napi::Env env, const char* op) {
    CheckOpen(env, op);
    int fd = bpf_program__fd(prog_);
    if (fd < 0) ThrowErrno(env, op, EBADF, "program '" + name_ + "' is not loaded yet (BpfObject.load)");
    return fd;
  }

  Napi::Value Name(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), name_); }

  Napi::Value FdGetter(const Napi::CallbackInfo& info) {
    CheckOpen(info.Env(), "BpfProgram.fd");
    int fd = bpf_program__fd(prog_);
    return Napi::Number::New(info.Env(), fd < 0 ? -1 : fd);
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    CheckOpen(info.Env(), "BpfProgram.info");
    return ProgramInfoFromFd(info.Env(), bpf_program__fd(prog_), name_, bpf_program__type(prog_));
  }

  Napi::Value TestRun(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "options must be an object");
    Napi::Object o = info[0].As<Napi::Object>();
    Napi::Value data = o.Get("data"), ctx = o.Get("ctx"), repeat = o.Get("repeat"), sizeOut = o.Get("dataSizeOut");
    if (!data.IsBuffer()) throw Napi::TypeError::New(env, "options.data must be a Buffer");
    if (!ctx.IsUndefined() && !ctx.IsBuffer()) throw Napi::TypeError::New(env, "options.ctx must be a Buffer");
    auto num = [&](Napi::Value v, const char* name, uint32_t dflt) -> uint32_t {
      if (v.IsUndefined()) return dflt;
      if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string(name) + " must be a number");
      double d = v.As<Napi::Number>().DoubleValue();
      if (!(d >= 0 && d <= 2147483647.0) || d != static_cast<double>(static_cast<uint32_t>(d)))
        throw Napi::RangeError::New(env, std::string(name) + " must be an integer in [0, 2^31)");
      return static_cast<uint32_t>(d);
    };
    auto in = data.As<Napi::Buffer<uint8_t>>();
    uint32_t rep = num(repeat, "options.repeat", 1);
    uint32_t out = num(sizeOut, "options.dataSizeOut", static_cast<uint32_t>(in.Length() + 256));
    std::vector<uint8_t> dataV(in.Data(), in.Data() + in.Length()), ctxV;
    if (ctx.IsBuffer()) {
      auto c = ctx.As<Napi::Buffer<uint8_t>>();
      ctxV.assign(c.Data(), c.Data() + c.Length());
    }
    int fd = fcntl(Fd(env, "bpf_prog_test_run_opts"), F_DUPFD_CLOEXEC, 0);
    if (fd < 0) ThrowErrno(env, "fcntl(F_DUPFD_CLOEXEC)", errno);
    auto* w = new TestRunWorker(env, fd, std::move(dataV), std::move(ctxV), rep, out);
    Napi::Promise p = w->Promise();
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

  // A BPF iterator pass: attach, create the iterator and read it to the end (each read runs the program
  // over the next sockets/objects), then detach. Returns what the program printed (bpf_seq_printf).
  Napi::Value RunIter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CheckOpen(env, "bpf_program__attach_iter");
    Fd(env, "bpf_program__attach_iter");
    bpf_link* link = bpf_program__attach_iter(prog_, nullptr);
    if (!link) ThrowErrno(env, "bpf_program__attach_iter", errno);
    int fd = bpf_iter_create(bpf_link__fd(link));
    if (fd < 0) {
      int err = errno;
      bpf_link__destroy(link);
      ThrowErrno(env, "bpf_iter_create", err);
    }
    std::string out;
    char buf[4096];
    int err = 0;
    for (;;) {
      ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n > 0) {
        out.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) err = errno;
      break;
    }
    ::close(fd);
    bpf_link__destroy(link);
    if (err) ThrowErrno(env, "read(bpf_iter)", err);
    return Napi::String::New(env, out);
  }

  std::shared_ptr<ObjectState> owner_;
  bpf_program* prog_ = nullptr;
  std::string name_;
};

}  // namespace

Napi::Function InitBpfProgram(Napi::Env env) { return BpfProgram::Init(env); }

Napi::Object NewObjectProgram(Napi::Env env, std::shared_ptr<ObjectState> owner, bpf_program* prog) {
  ProgramInit init;
  init.owner = std::move(owner);
  init.prog = prog;
  return BpfProgram::Wrap(env, init);
}

}  // namespace bpx
