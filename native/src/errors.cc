// BpfError construction and the libbpf print hook.
#include "common.h"

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <sstream>

namespace bpx {

std::string ErrnoName(int err) {
  if (err < 0) err = -err;
  // Kernel-internal codes that reach userspace from some bpf() commands; glibc has no names for them.
  switch (err) {
    case 524:
      return "ENOTSUPP";
    case 512:
      return "ERESTARTSYS";
  }
  const char* name = strerrorname_np(err);
  if (name) return name;
  return "E" + std::to_string(err);
}

static std::string StrError(int err) {
  if (err == 524) return "Operation not supported";
  char buf[256];
  // GNU strerror_r returns the message pointer (possibly not buf).
  return strerror_r(err, buf, sizeof(buf));
}

Napi::Error MakeError(Napi::Env env, const std::string& op, int err, const std::string& detail) {
  if (err < 0) err = -err;
  if (err == 0) err = EINVAL;  // a failure without errno: report it as EINVAL, as libbpf does internally
  std::string code = ErrnoName(err);
  std::string msg = op + ": " + StrError(err) + " (" + code + ")";
  if (!detail.empty()) msg += "\n" + detail;
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, code));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("op", Napi::String::New(env, op));
  return e;
}

void ThrowErrno(Napi::Env env, const std::string& op, int err, const std::string& detail) {
  throw MakeError(env, op, err, detail);
}

void ThrowClosed(Napi::Env env, const std::string& op, const char* what) {
  Napi::Error e = Napi::Error::New(env, op + ": " + what + " is closed (EBADF)");
  e.Set("code", Napi::String::New(env, "EBADF"));
  e.Set("errno", Napi::Number::New(env, EBADF));
  e.Set("op", Napi::String::New(env, op));
  throw e;
}

// ---- libbpf log ------------------------------------------------------------------------------------------

static std::mutex logMu;
static std::deque<std::string> logLines;  // last warnings, newest at the back
static bool logEcho = false;
static const size_t kLogKeep = 200;

static int PrintFn(enum libbpf_print_level level, const char* fmt, va_list args) {
  va_list copy;
  va_copy(copy, args);
  if (logEcho) vfprintf(stderr, fmt, copy);
  va_end(copy);
  if (level == LIBBPF_DEBUG) return 0;  // debug chatter is too much to keep; warnings carry the verifier log

  char stackBuf[1024];
  va_copy(copy, args);
  int n = vsnprintf(stackBuf, sizeof(stackBuf), fmt, copy);
  va_end(copy);
  std::string text;
  if (n < 0) return 0;
  if (static_cast<size_t>(n) < sizeof(stackBuf)) {
    text.assign(stackBuf, n);
  } else {
    text.resize(n + 1);
    va_copy(copy, args);
    vsnprintf(&text[0], n + 1, fmt, copy);
    va_end(copy);
    text.resize(n);
  }
  std::lock_guard<std::mutex> lock(logMu);
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    logLines.push_back(line);
    if (logLines.size() > kLogKeep) logLines.pop_front();
  }
  return 0;
}

void InstallLibbpfPrint() {
  const char* dbg = getenv("BPFPROXY_LIBBPF_DEBUG");
  logEcho = dbg && std::string(dbg) == "1";
  libbpf_set_print(PrintFn);
}

void ClearLibbpfLog() {
  std::lock_guard<std::mutex> lock(logMu);
  logLines.clear();
}

std::string LibbpfLogTail(size_t maxLines) {
  std::lock_guard<std::mutex> lock(logMu);
  size_t start = logLines.size() > maxLines ? logLines.size() - maxLines : 0;
  std::string out;
  if (start > 0) out += "  ... (" + std::to_string(start) + " earlier lines omitted)\n";
  for (size_t i = start; i < logLines.size(); i++) {
    out += "  " + logLines[i];
    if (i + 1 < logLines.size()) out += "\n";
  }
  return out;
}

// ---- argument helpers ------------------------------------------------------------------------------------

static Napi::Value Arg(const Napi::CallbackInfo& info, size_t i) {
  return i < info.Length() ? info[i] : info.Env().Undefined();
}

std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = Arg(info, i);
  if (!v.IsString()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a string");
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos)
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must not contain NUL");
  return s;
}

Napi::Buffer<uint8_t> ArgBuffer(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = Arg(info, i);
  if (!v.IsBuffer()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a Buffer");
  return v.As<Napi::Buffer<uint8_t>>();
}

uint32_t ArgU32(const Napi::CallbackInfo& info, size_t i, const char* name, uint32_t dflt, bool optional) {
  Napi::Value v = Arg(info, i);
  if (optional && (v.IsUndefined() || v.IsNull())) return dflt;
  if (!v.IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 4294967295.0) || d != static_cast<double>(static_cast<uint32_t>(d)))
    throw Napi::RangeError::New(info.Env(), std::string(name) + " must be an integer in [0, 2^32)");
  return static_cast<uint32_t>(d);
}

int32_t ArgI32(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = Arg(info, i);
  if (!v.IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= -2147483648.0 && d <= 2147483647.0) || d != static_cast<double>(static_cast<int32_t>(d)))
    throw Napi::RangeError::New(info.Env(), std::string(name) + " must be a 32-bit integer");
  return static_cast<int32_t>(d);
}

}  // namespace bpx
