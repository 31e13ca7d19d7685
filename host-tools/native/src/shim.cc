// airlock fabric shim: only the syscalls Node cannot make by itself (and, in aead.cc, the cipher
// calls node:crypto cannot make). Everything else (the vhost-user protocol, virtqueues, vsock) is
// TypeScript in host-tools/src/fabric/.
//
//   listenUnix(path, backlog) -> fd         a non-blocking listening AF_UNIX stream socket
//   accept(fd) -> fd | -1                   -1 when no connection is pending
//   recvMsg(fd, buf) -> {bytes, fds} | null bytes 0 = EOF; null = would block; fds via SCM_RIGHTS
//   send(fd, buf) -> bytes                  whole buffer or throws (waits at most 1 s for room)
//   close(fd)
//   mmap(fd, length) -> ArrayBuffer         MAP_SHARED read/write over a received memfd
//   munmap(arrayBuffer)                     detaches the buffer first, so JS cannot touch freed pages
//   eventfdRead(fd) -> number               0 when the counter is zero (never blocks)
//   eventfdWrite(fd)                        adds 1
//   new Poller(fd, cb(err, events)); start(readable, writable); stop(); close()
//                                           uv_poll on Node's own loop, so nothing blocks it
//   listenVsock(port, backlog) -> fd        (guests) a non-blocking listening AF_VSOCK socket
//   acceptBlocking(fd) -> fd | -1           (guests) an accepted socket in blocking mode, for
//                                           node-vsock's reader thread; -1 when none is pending
//   connectVsock(cid, port) -> fd           (guests) a non-blocking connect under way (poll for
//                                           writable, then socketError)
//   socketError(fd) -> errno                SO_ERROR: 0 once a connect succeeded
//   aeadSeal, aeadOpen                      ChaCha20-Poly1305 into and within our buffers, for
//                                           the secure channel (aead.cc)
// In the guests, listening goes through here rather than node-vsock: its listener blocks a thread
// in accept(), so closing it does not stop the kernel from accepting (a closed port stayed open).
#include <napi.h>
#include <uv.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <linux/vm_sockets.h>
#include <unistd.h>

// aead.cc: the secure channel's cipher (aeadSeal, aeadOpen).
namespace airlock {
void InitAead(Napi::Env env, Napi::Object exports);
}

namespace {

constexpr int kMaxFdsPerMsg = 16;  // vhost-user sends at most 8 (VHOST_MEMORY_BASELINE_NREGIONS)

Napi::Value ThrowErrno(Napi::Env env, const char* what, int err) {
  Napi::Error e = Napi::Error::New(env, std::string(what) + ": " + strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  e.ThrowAsJavaScriptException();
  return env.Undefined();
}

bool ArgFd(const Napi::CallbackInfo& info, size_t i, int* fd) {
  if (info.Length() <= i || !info[i].IsNumber()) {
    Napi::TypeError::New(info.Env(), "fd must be a number").ThrowAsJavaScriptException();
    return false;
  }
  int64_t v = info[i].As<Napi::Number>().Int64Value();
  if (v < 0 || v > INT32_MAX) {
    Napi::RangeError::New(info.Env(), "fd out of range").ThrowAsJavaScriptException();
    return false;
  }
  *fd = static_cast<int>(v);
  return true;
}

// Each vsock connection's receive buffer (the credit its peer may send ahead of our reads). The
// kernel's default, 256 KiB, is about 15 ms of transfer under TCG: a guest busy opening a 1 MiB
// input frame (~80 ms) would stall its sender for the rest of that time. 4 MiB keeps the sender
// going while we work (issue 12: the data path pipelined). Accepted sockets inherit the listener's.
// Best effort: a kernel that refuses keeps its default, which is only slower.
constexpr unsigned long long kVsockBuffer = 4ull << 20;
void SetVsockBuffer(int fd) {
  unsigned long long size = kVsockBuffer;
  setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_BUFFER_MAX_SIZE, &size, sizeof size);
  setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_BUFFER_SIZE, &size, sizeof size);
}

// A non-blocking listening stream socket of `family` bound to `addr`.
Napi::Value ListenOn(Napi::Env env, int family, const struct sockaddr* addr, socklen_t len, int backlog) {
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ThrowErrno(env, "socket", errno);
  if (family == AF_VSOCK) SetVsockBuffer(fd);
  if (bind(fd, addr, len) < 0 || listen(fd, backlog) < 0) {
    int err = errno;
    close(fd);
    return ThrowErrno(env, "bind/listen", err);
  }
  return Napi::Number::New(env, fd);
}

Napi::Value ListenUnix(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsNumber()) {
    Napi::TypeError::New(env, "listenUnix(path, backlog)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string path = info[0].As<Napi::String>().Utf8Value();
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    Napi::RangeError::New(env, "socket path empty or too long").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path.data(), path.size());
  return ListenOn(env, AF_UNIX, reinterpret_cast<struct sockaddr*>(&addr), sizeof addr, info[1].As<Napi::Number>().Int32Value());
}

// accept4 with `flags`; -1 when no connection is pending.
Napi::Value AcceptWith(const Napi::CallbackInfo& info, int flags) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return env.Undefined();
  int c = accept4(fd, nullptr, nullptr, flags);
  if (c < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED) return Napi::Number::New(env, -1);
    return ThrowErrno(env, "accept", errno);
  }
  return Napi::Number::New(env, c);
}

Napi::Value Accept(const Napi::CallbackInfo& info) {
  return AcceptWith(info, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

Napi::Value ListenVsock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
    Napi::TypeError::New(env, "listenVsock(port, backlog)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  struct sockaddr_vm addr;
  memset(&addr, 0, sizeof addr);
  addr.svm_family = AF_VSOCK;
  addr.svm_cid = VMADDR_CID_ANY;
  addr.svm_port = info[0].As<Napi::Number>().Uint32Value();
  return ListenOn(env, AF_VSOCK, reinterpret_cast<struct sockaddr*>(&addr), sizeof addr, info[1].As<Napi::Number>().Int32Value());
}

Napi::Value ConnectVsock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
    Napi::TypeError::New(env, "connectVsock(cid, port)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  struct sockaddr_vm addr;
  memset(&addr, 0, sizeof addr);
  addr.svm_family = AF_VSOCK;
  addr.svm_cid = info[0].As<Napi::Number>().Uint32Value();
  addr.svm_port = info[1].As<Napi::Number>().Uint32Value();
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ThrowErrno(env, "socket(AF_VSOCK)", errno);
  SetVsockBuffer(fd);
  if (connect(fd, reinterpret_cast<struct sockaddr*>(&addr), sizeof addr) < 0 && errno != EINPROGRESS) {
    int err = errno;
    close(fd);
    return ThrowErrno(env, "connect", err);
  }
  return Napi::Number::New(env, fd);
}

Napi::Value SocketError(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return env.Undefined();
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return ThrowErrno(env, "getsockopt", errno);
  return Napi::Number::New(env, err);
}

Napi::Value AcceptBlocking(const Napi::CallbackInfo& info) {
  return AcceptWith(info, SOCK_CLOEXEC);
}

Napi::Value RecvMsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return env.Undefined();
  if (info.Length() < 2 || !info[1].IsTypedArray()) {
    Napi::TypeError::New(env, "recvMsg(fd, Uint8Array)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Uint8Array buf = info[1].As<Napi::Uint8Array>();
  struct iovec iov = {buf.Data(), buf.ByteLength()};
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMsg)];
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Null();
    return ThrowErrno(env, "recvmsg", errno);
  }
  Napi::Array fds = Napi::Array::New(env);
  uint32_t nfds = 0;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; i++) {
      int rfd;
      memcpy(&rfd, CMSG_DATA(c) + i * sizeof(int), sizeof rfd);
      fds.Set(nfds++, Napi::Number::New(env, rfd));
    }
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("bytes", Napi::Number::New(env, static_cast<double>(n)));
  out.Set("fds", fds);
  // MSG_CTRUNC means fds were dropped by the kernel (more than we allow): the peer is misbehaving.
  out.Set("truncated", Napi::Boolean::New(env, (msg.msg_flags & MSG_CTRUNC) != 0));
  return out;
}

Napi::Value Send(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return env.Undefined();
  if (info.Length() < 2 || !info[1].IsTypedArray()) {
    Napi::TypeError::New(env, "send(fd, Uint8Array)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Uint8Array buf = info[1].As<Napi::Uint8Array>();
  size_t off = 0;
  int waits = 0;
  while (off < buf.ByteLength()) {
    ssize_t n = send(fd, buf.Data() + off, buf.ByteLength() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if ((errno == EAGAIN || errno == EWOULDBLOCK) && waits < 10) {
      // Replies are small; a peer that does not drain its socket for a second is cut off.
      struct pollfd p = {fd, POLLOUT, 0};
      poll(&p, 1, 100);
      waits++;
      continue;
    }
    return ThrowErrno(env, "send", errno);
  }
  return Napi::Number::New(env, static_cast<double>(off));
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return env.Undefined();
  close(fd);
  return env.Undefined();
}

// Live mappings by address, so munmap can tell a mapping it made from anything else and the GC
// finalizer does not unmap twice. Ids keep a late finalizer from unmapping a newer mapping that
// reused the address.
struct Mapping {
  void* addr;
  size_t length;
};
std::map<uint64_t, Mapping> g_maps;
std::map<void*, uint64_t> g_ids;
uint64_t g_nextId = 1;

void Unmap(uint64_t id) {
  auto it = g_maps.find(id);
  if (it == g_maps.end()) return;
  munmap(it->second.addr, it->second.length);
  g_ids.erase(it->second.addr);
  g_maps.erase(it);
}

Napi::Value Mmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return env.Undefined();
  if (info.Length() < 2 || !info[1].IsNumber()) {
    Napi::TypeError::New(env, "mmap(fd, length)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  double len = info[1].As<Napi::Number>().DoubleValue();
  // 2^40 bounds what a guest may ask us to map; the kernel also refuses sizes past the memfd.
  if (!(len > 0) || len > 1099511627776.0 || len != static_cast<double>(static_cast<uint64_t>(len))) {
    Napi::RangeError::New(env, "mmap length out of range").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  size_t length = static_cast<size_t>(len);
  void* addr = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (addr == MAP_FAILED) return ThrowErrno(env, "mmap", errno);
  uint64_t id = g_nextId++;
  g_maps[id] = Mapping{addr, length};
  g_ids[addr] = id;
  uint64_t* hint = new uint64_t(id);
  return Napi::ArrayBuffer::New(
      env, addr, length,
      [](Napi::Env, void*, uint64_t* h) {
        Unmap(*h);
        delete h;
      },
      hint);
}

Napi::Value Munmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArrayBuffer()) {
    Napi::TypeError::New(env, "munmap(ArrayBuffer)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  void* addr = ab.Data();
  auto it = g_ids.find(addr);
  if (addr == nullptr || it == g_ids.end()) return env.Undefined();  // already unmapped
  uint64_t id = it->second;
  // Detach first: every view of it now has length 0, so no JS can reach the pages we free.
  if (!ab.IsDetached()) ab.Detach();
  Unmap(id);
  return env.Undefined();
}

Napi::Value EventfdRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return env.Undefined();
  // The fd's file description is shared with QEMU: poll instead of setting O_NONBLOCK on it.
  struct pollfd p = {fd, POLLIN, 0};
  if (poll(&p, 1, 0) <= 0 || !(p.revents & POLLIN)) return Napi::Number::New(env, 0);
  uint64_t v = 0;
  ssize_t n = read(fd, &v, sizeof v);
  if (n != sizeof v) return Napi::Number::New(env, 0);
  return Napi::Number::New(env, static_cast<double>(v));
}

Napi::Value EventfdWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return env.Undefined();
  uint64_t one = 1;
  ssize_t n;
  do {
    n = write(fd, &one, sizeof one);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && errno != EAGAIN) return ThrowErrno(env, "eventfd write", errno);
  return env.Undefined();
}

// A uv_poll_t on Node's loop. The handle lives on the heap because uv_close finishes later than
// the JS object may be collected.
class Poller : public Napi::ObjectWrap<Poller> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Poller",
                       {InstanceMethod("start", &Poller::Start), InstanceMethod("stop", &Poller::Stop),
                        InstanceMethod("close", &Poller::Close)});
  }

  explicit Poller(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Poller>(info) {
    Napi::Env env = info.Env();
    int fd;
    if (!ArgFd(info, 0, &fd)) return;
    if (info.Length() < 2 || !info[1].IsFunction()) {
      Napi::TypeError::New(env, "new Poller(fd, callback)").ThrowAsJavaScriptException();
      return;
    }
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      Napi::Error::New(env, "no event loop").ThrowAsJavaScriptException();
      return;
    }
    handle_ = new uv_poll_t;
    int rc = uv_poll_init(loop, handle_, fd);
    if (rc != 0) {
      delete handle_;
      handle_ = nullptr;
      Napi::Error::New(env, std::string("uv_poll_init: ") + uv_strerror(rc)).ThrowAsJavaScriptException();
      return;
    }
    handle_->data = this;
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    context_ = new Napi::AsyncContext(env, "airlock:fabric-poll");
  }

  ~Poller() override {
    CloseHandle();
    delete context_;
  }

 private:
  void CloseHandle() {
    if (handle_ == nullptr) return;
    handle_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(handle_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    handle_ = nullptr;
  }

  Napi::Value Start(const Napi::CallbackInfo& info) {
    if (handle_ == nullptr) return info.Env().Undefined();
    int events = 0;
    if (info.Length() > 0 && info[0].ToBoolean()) events |= UV_READABLE;
    if (info.Length() > 1 && info[1].ToBoolean()) events |= UV_WRITABLE;
    int rc = uv_poll_start(handle_, events, &Poller::OnEvent);
    if (rc != 0) Napi::Error::New(info.Env(), std::string("uv_poll_start: ") + uv_strerror(rc)).ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_poll_stop(handle_);
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    CloseHandle();
    callback_.Reset();
    return info.Env().Undefined();
  }

  static void OnEvent(uv_poll_t* h, int status, int events) {
    Poller* self = static_cast<Poller*>(h->data);
    if (self == nullptr || self->callback_.IsEmpty()) return;
    Napi::Env env = self->callback_.Env();
    Napi::HandleScope scope(env);
    Napi::Value err = status < 0 ? Napi::String::New(env, uv_strerror(status)).As<Napi::Value>() : env.Null().As<Napi::Value>();
    // MakeCallback runs microtasks and reports a throw as an uncaught exception, like any Node
    // callback would; the TypeScript side catches everything itself.
    self->callback_.MakeCallback(env.Global(), {err, Napi::Number::New(env, events)}, *self->context_);
  }

  uv_poll_t* handle_ = nullptr;
  Napi::FunctionReference callback_;
  Napi::AsyncContext* context_ = nullptr;
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("listenUnix", Napi::Function::New(env, ListenUnix));
  exports.Set("accept", Napi::Function::New(env, Accept));
  exports.Set("listenVsock", Napi::Function::New(env, ListenVsock));
  exports.Set("acceptBlocking", Napi::Function::New(env, AcceptBlocking));
  exports.Set("connectVsock", Napi::Function::New(env, ConnectVsock));
  exports.Set("socketError", Napi::Function::New(env, SocketError));
  exports.Set("recvMsg", Napi::Function::New(env, RecvMsg));
  exports.Set("send", Napi::Function::New(env, Send));
  exports.Set("close", Napi::Function::New(env, Close));
  exports.Set("mmap", Napi::Function::New(env, Mmap));
  exports.Set("munmap", Napi::Function::New(env, Munmap));
  exports.Set("eventfdRead", Napi::Function::New(env, EventfdRead));
  exports.Set("eventfdWrite", Napi::Function::New(env, EventfdWrite));
  exports.Set("Poller", Poller::Init(env));
  airlock::InitAead(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(airlock_fabric, Init)
