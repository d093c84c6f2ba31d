/*
 * peercred(fd) -> { pid, uid, gid }: the credentials that the kernel recorded
 * for the peer of a connected Unix socket when it called connect(2)
 * (getsockopt SOL_SOCKET/SO_PEERCRED). Node exposes no API for them, and the
 * Workload API must identify its caller from the connection itself.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>
#include <node_api.h>

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[160];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_value code, message, error;
  napi_create_string_utf8(env, err == EBADF ? "EBADF" : err == ENOTSOCK ? "ENOTSOCK" : "EPEERCRED",
                          NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_value errno_value;
  napi_create_int32(env, err, &errno_value);
  napi_set_named_property(env, error, "errno", errno_value);
  napi_throw(env, error);
  return NULL;
}

static napi_value set_u32(napi_env env, napi_value obj, const char *name, uint32_t v) {
  napi_value value;
  napi_create_uint32(env, v, &value);
  napi_set_named_property(env, obj, name, value);
  return obj;
}

/*
 * The one argument of every function here: a file descriptor. Returns false
 * (with a TypeError thrown) when it is missing or not a non-negative integer.
 */
static bool fd_argument(napi_env env, napi_callback_info info, const char *usage, int32_t *fd) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], fd) != napi_ok || *fd < 0) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be a non-negative integer", usage);
    napi_throw_type_error(env, NULL, msg);
    return false;
  }
  return true;
}

static napi_value peercred(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!fd_argument(env, info, "peercred(fd): fd", &fd)) return NULL;
  struct ucred cred;
  socklen_t len = sizeof cred;
  memset(&cred, 0, sizeof cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return throw_errno(env, "getsockopt(SO_PEERCRED)", errno);
  }
  if (len != sizeof cred || cred.pid <= 0) {
    /* pid 0: the peer is not a process of this kernel's view (e.g. socketpair across a pid ns) */
    return throw_errno(env, "getsockopt(SO_PEERCRED) returned no peer process", ESRCH);
  }
  napi_value obj;
  napi_create_object(env, &obj);
  set_u32(env, obj, "pid", (uint32_t)cred.pid);
  set_u32(env, obj, "uid", (uint32_t)cred.uid);
  set_u32(env, obj, "gid", (uint32_t)cred.gid);
  return obj;
}

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* Linux 6.5 */
#endif

/*
 * peerpidfd(fd) -> pidfd: a pidfd for the peer process, taken by the kernel at
 * connect(2) time (SO_PEERPIDFD), so it names that process even if its pid is
 * reused later. Throws with code ENOPROTOOPT on kernels before 6.5. The
 * caller closes the returned fd.
 */
static napi_value peerpidfd(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!fd_argument(env, info, "peerpidfd(fd): fd", &fd)) return NULL;
  int pidfd = -1;
  socklen_t len = sizeof pidfd;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) != 0) {
    int err = errno;
    if (err == ENOPROTOOPT) {
      napi_value code, message, error;
      napi_create_string_utf8(env, "ENOPROTOOPT", NAPI_AUTO_LENGTH, &code);
      napi_create_string_utf8(env, "SO_PEERPIDFD is not supported by this kernel", NAPI_AUTO_LENGTH, &message);
      napi_create_error(env, code, message, &error);
      napi_throw(env, error);
      return NULL;
    }
    return throw_errno(env, "getsockopt(SO_PEERPIDFD)", err);
  }
  napi_value out;
  napi_create_int32(env, pidfd, &out);
  return out;
}

#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

/*
 * pidfdalive(pidfd) -> boolean: whether the process a pidfd names has not
 * exited, by sending it signal 0 (one syscall, no /proc read). EPERM still
 * means the process exists; ESRCH means it is gone.
 */
static napi_value pidfdalive(napi_env env, napi_callback_info info) {
  int32_t pidfd;
  if (!fd_argument(env, info, "pidfdalive(pidfd): pidfd", &pidfd)) return NULL;
  bool alive;
  if (syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) == 0) {
    alive = true;
  } else if (errno == EPERM) {
    alive = true;
  } else if (errno == ESRCH) {
    alive = false;
  } else {
    return throw_errno(env, "pidfd_send_signal", errno);
  }
  napi_value out;
  napi_get_boolean(env, alive, &out);
  return out;
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  napi_value fn;
  napi_create_function(env, "peercred", NAPI_AUTO_LENGTH, peercred, NULL, &fn);
  napi_set_named_property(env, exports, "peercred", fn);
  napi_create_function(env, "peerpidfd", NAPI_AUTO_LENGTH, peerpidfd, NULL, &fn);
  napi_set_named_property(env, exports, "peerpidfd", fn);
  napi_create_function(env, "pidfdalive", NAPI_AUTO_LENGTH, pidfdalive, NULL, &fn);
  napi_set_named_property(env, exports, "pidfdalive", fn);
  return exports;
}
