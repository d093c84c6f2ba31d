// SPDX-License-Identifier: Apache-2.0
/* meshid_bpf: the few things of the datapath that Node cannot do itself.
 *
 *   bootTimeNs()                          CLOCK_BOOTTIME now (bigint)
 *   realTimeMinusBootTimeNs()             CLOCK_REALTIME - CLOCK_BOOTTIME (bigint)
 *   loadObject(obj, pinRoot)              load an eBPF object, re-using (or
 *                                         creating) maps pinned by name under
 *                                         pinRoot; { programs: {name: {fd, id}},
 *                                         maps: {name: id} }
 *   closeFd(fd)
 *   ifIndex(netns, ifname)                0 when there is no such interface
 *   tcAttach(netns, ifname, egress, progFd, handle, priority)
 *   tcDetach(netns, ifname, egress, handle, priority) -> bool (was attached)
 *   tcQuery(netns, ifname, egress, handle, priority)  -> program id or 0
 *   ringOpen(pinPath, callback, pollMs)   external; callback(Buffer) per batch of
 *                                         records, each as u32 length (native
 *                                         order) + bytes, padded to 4; driven by
 *                                         the libuv loop (no thread), at most
 *                                         RING_BATCH_RECORDS per loop turn; with
 *                                         pollMs > 0 also read every pollMs (for
 *                                         a ring whose writer wakes its reader
 *                                         only for a batch)
 *   ringClose(ring)
 *   progTestRun(progFd, packet, repeat, ingressIfindex)
 *                                         BPF_PROG_TEST_RUN of a tc program on
 *                                         one Ethernet frame, `repeat` times;
 *                                         { retval, durationNs } (ns per run,
 *                                         as the kernel measured it)
 *
 * `netns` is null (this thread's namespace) or the path of a network
 * namespace (/run/netns/NAME): the netlink work happens with the calling
 * thread switched into it, and switched back before returning. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <node_api.h>
#include <uv.h>

#define CHECK(call)                                                          \
	do {                                                                 \
		if ((call) != napi_ok) {                                     \
			napi_throw_error(env, NULL, "meshid_bpf: " #call);   \
			return NULL;                                         \
		}                                                            \
	} while (0)

/* The tail of what libbpf printed while loading (the verifier log on failure). */
static char libbpf_log[8192];
static size_t libbpf_log_len;

static int capture_libbpf(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char line[1024];
	int n;

	if (level == LIBBPF_DEBUG)
		return 0;
	n = vsnprintf(line, sizeof(line), fmt, ap);
	if (n <= 0)
		return 0;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;
	if (libbpf_log_len + n >= sizeof(libbpf_log)) {
		/* keep the latest half */
		size_t keep = sizeof(libbpf_log) / 2;
		memmove(libbpf_log, libbpf_log + libbpf_log_len - keep, keep);
		libbpf_log_len = keep;
		if ((size_t)n >= sizeof(libbpf_log) - keep)
			n = sizeof(libbpf_log) - keep - 1;
	}
	memcpy(libbpf_log + libbpf_log_len, line, n);
	libbpf_log_len += n;
	libbpf_log[libbpf_log_len] = 0;
	return 0;
}

static napi_value throw_errno(napi_env env, const char *what, int err)
{
	char msg[16384];
	char code[32];

	if (err < 0)
		err = -err;
	snprintf(code, sizeof(code), "E%d", err);
	snprintf(msg, sizeof(msg), "%s: %s%s%s", what, strerror(err),
		 libbpf_log_len ? "\n" : "", libbpf_log_len ? libbpf_log : "");
	napi_throw_error(env, code, msg);
	return NULL;
}

static int get_string(napi_env env, napi_value v, char *buf, size_t size)
{
	size_t len;

	if (napi_get_value_string_utf8(env, v, buf, size, &len) != napi_ok)
		return -1;
	return len + 1 < size ? 0 : -1;
}

/* netns argument: null/undefined or a path. */
static int get_netns(napi_env env, napi_value v, char *buf, size_t size, int *has)
{
	napi_valuetype t;

	*has = 0;
	if (napi_typeof(env, v, &t) != napi_ok)
		return -1;
	if (t == napi_null || t == napi_undefined)
		return 0;
	*has = 1;
	return get_string(env, v, buf, size);
}

static int enter_netns(const char *path, int *saved)
{
	int target, err;

	*saved = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (*saved < 0)
		return -errno;
	target = open(path, O_RDONLY | O_CLOEXEC);
	if (target < 0) {
		err = -errno;
		close(*saved);
		*saved = -1;
		return err;
	}
	if (setns(target, CLONE_NEWNET) != 0) {
		err = -errno;
		close(target);
		close(*saved);
		*saved = -1;
		return err;
	}
	close(target);
	return 0;
}

static void leave_netns(int saved)
{
	if (saved < 0)
		return;
	if (setns(saved, CLONE_NEWNET) != 0)
		abort(); /* the main thread would stay in the wrong namespace */
	close(saved);
}

static napi_value boot_time_ns(napi_env env, napi_callback_info info)
{
	struct timespec ts;
	napi_value out;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	CHECK(napi_create_bigint_uint64(env, (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec, &out));
	return out;
}

static napi_value real_minus_boot_ns(napi_env env, napi_callback_info info)
{
	struct timespec b1, r, b2;
	int64_t boot, real;
	napi_value out;

	/* the boot-time reading halfway between the two is the one that goes with r */
	clock_gettime(CLOCK_BOOTTIME, &b1);
	clock_gettime(CLOCK_REALTIME, &r);
	clock_gettime(CLOCK_BOOTTIME, &b2);
	boot = ((int64_t)b1.tv_sec * 1000000000LL + b1.tv_nsec +
		(int64_t)b2.tv_sec * 1000000000LL + b2.tv_nsec) / 2;
	real = (int64_t)r.tv_sec * 1000000000LL + r.tv_nsec;
	CHECK(napi_create_bigint_int64(env, real - boot, &out));
	return out;
}

static napi_value load_object(napi_env env, napi_callback_info info)
{
	size_t argc = 2;
	napi_value argv[2], result, programs, maps, v;
	char path[4096], pin_root[4096];
	struct bpf_object *obj;
	struct bpf_program *prog;
	struct bpf_map *map;
	int err;

	CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	if (argc < 2 || get_string(env, argv[0], path, sizeof(path)) ||
	    get_string(env, argv[1], pin_root, sizeof(pin_root))) {
		napi_throw_type_error(env, NULL, "loadObject(objectPath, pinRoot)");
		return NULL;
	}
	libbpf_log_len = 0;
	libbpf_log[0] = 0;
	LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = pin_root);
	obj = bpf_object__open_file(path, &opts);
	if (!obj)
		return throw_errno(env, "bpf_object__open_file", errno);
	err = bpf_object__load(obj);
	if (err) {
		bpf_object__close(obj);
		return throw_errno(env, "bpf_object__load", err);
	}
	CHECK(napi_create_object(env, &result));
	CHECK(napi_create_object(env, &programs));
	CHECK(napi_create_object(env, &maps));
	bpf_object__for_each_program(prog, obj) {
		int fd = fcntl(bpf_program__fd(prog), F_DUPFD_CLOEXEC, 3);

		if (fd < 0) {
			err = errno;
			bpf_object__close(obj);
			return throw_errno(env, "dup program fd", err);
		}
		struct bpf_prog_info pi;
		__u32 len = sizeof(pi);
		napi_value entry;

		memset(&pi, 0, sizeof(pi));
		bpf_obj_get_info_by_fd(fd, &pi, &len);
		CHECK(napi_create_object(env, &entry));
		CHECK(napi_create_int32(env, fd, &v));
		CHECK(napi_set_named_property(env, entry, "fd", v));
		CHECK(napi_create_uint32(env, pi.id, &v));
		CHECK(napi_set_named_property(env, entry, "id", v));
		CHECK(napi_set_named_property(env, programs, bpf_program__name(prog), entry));
	}
	bpf_object__for_each_map(map, obj) {
		struct bpf_map_info mi;
		__u32 len = sizeof(mi);

		memset(&mi, 0, sizeof(mi));
		if (bpf_obj_get_info_by_fd(bpf_map__fd(map), &mi, &len) != 0)
			continue;
		CHECK(napi_create_uint32(env, mi.id, &v));
		CHECK(napi_set_named_property(env, maps, bpf_map__name(map), v));
	}
	bpf_object__close(obj);
	CHECK(napi_set_named_property(env, result, "programs", programs));
	CHECK(napi_set_named_property(env, result, "maps", maps));
	return result;
}

static napi_value close_fd(napi_env env, napi_callback_info info)
{
	size_t argc = 1;
	napi_value argv[1];
	int32_t fd;

	CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 3) {
		napi_throw_type_error(env, NULL, "closeFd(fd)");
		return NULL;
	}
	close(fd);
	return NULL;
}

/* Parsed (netns, ifname, ...) and the namespace entered for them. */
struct link_call {
	char netns[4096];
	int has_netns;
	char ifname[IF_NAMESIZE];
	int saved_netns;
	int ifindex;
};

/* Enters the namespace and resolves the interface. On failure throws and returns -1
 * (with the namespace already left). */
static int link_call_begin(napi_env env, napi_value *argv, struct link_call *c, int need_link)
{
	int err;

	c->saved_netns = -1;
	if (get_netns(env, argv[0], c->netns, sizeof(c->netns), &c->has_netns) ||
	    get_string(env, argv[1], c->ifname, sizeof(c->ifname))) {
		napi_throw_type_error(env, NULL, "expected (netns path or null, interface name)");
		return -1;
	}
	if (c->has_netns) {
		err = enter_netns(c->netns, &c->saved_netns);
		if (err) {
			throw_errno(env, c->netns, err);
			return -1;
		}
	}
	c->ifindex = if_nametoindex(c->ifname);
	if (c->ifindex == 0 && need_link) {
		err = errno;
		leave_netns(c->saved_netns);
		napi_throw_error(env, "ENODEV", err == ENODEV || err == ENXIO ?
				 "no such interface" : strerror(err));
		return -1;
	}
	return 0;
}

static napi_value if_index(napi_env env, napi_callback_info info)
{
	size_t argc = 2;
	napi_value argv[2], out;
	struct link_call c;

	CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	if (argc < 2) {
		napi_throw_type_error(env, NULL, "ifIndex(netns, ifname)");
		return NULL;
	}
	if (link_call_begin(env, argv, &c, 0))
		return NULL;
	leave_netns(c.saved_netns);
	CHECK(napi_create_uint32(env, c.ifindex, &out));
	return out;
}

static int get_tc_args(napi_env env, napi_value *argv, int *egress, uint32_t *handle, uint32_t *prio)
{
	bool b;

	if (napi_get_value_bool(env, argv[0], &b) != napi_ok ||
	    napi_get_value_uint32(env, argv[1], handle) != napi_ok ||
	    napi_get_value_uint32(env, argv[2], prio) != napi_ok || *handle == 0 ||
	    *prio == 0 || *prio > 0xffff) {
		napi_throw_type_error(env, NULL, "expected (egress: boolean, handle > 0, priority 1..65535)");
		return -1;
	}
	*egress = b;
	return 0;
}

static napi_value tc_attach(napi_env env, napi_callback_info info)
{
	size_t argc = 6;
	napi_value argv[6];
	struct link_call c;
	uint32_t handle, prio;
	int32_t prog_fd;
	int egress, err;

	CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	if (argc < 6 || napi_get_value_int32(env, argv[3], &prog_fd) != napi_ok) {
		napi_throw_type_error(env, NULL, "tcAttach(netns, ifname, egress, progFd, handle, priority)");
		return NULL;
	}
	napi_value targs[3] = { argv[2], argv[4], argv[5] };
	if (get_tc_args(env, targs, &egress, &handle, &prio))
		return NULL;
	if (link_call_begin(env, argv, &c, 1))
		return NULL;
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = c.ifindex,
		    .attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS);
	err = bpf_tc_hook_create(&hook); /* the clsact qdisc */
	if (err && err != -EEXIST) {
		leave_netns(c.saved_netns);
		return throw_errno(env, "create clsact qdisc", err);
	}
	hook.attach_point = egress ? BPF_TC_EGRESS : BPF_TC_INGRESS;
	LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = prog_fd, .handle = handle,
		    .priority = prio, .flags = BPF_TC_F_REPLACE);
	err = bpf_tc_attach(&hook, &opts);
	leave_netns(c.saved_netns);
	if (err)
		return throw_errno(env, "attach tc program", err);
	return NULL;
}

static napi_value tc_detach_or_query(napi_env env, napi_callback_info info, int detach)
{
	size_t argc = 5;
	napi_value argv[5], out;
	struct link_call c;
	uint32_t handle, prio;
	int egress, err;

	CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	if (argc < 5) {
		napi_throw_type_error(env, NULL, "(netns, ifname, egress, handle, priority)");
		return NULL;
	}
	if (get_tc_args(env, argv + 2, &egress, &handle, &prio))
		return NULL;
	if (link_call_begin(env, argv, &c, 1))
		return NULL;
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = c.ifindex,
		    .attach_point = egress ? BPF_TC_EGRESS : BPF_TC_INGRESS);
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = handle, .priority = prio);
	err = detach ? bpf_tc_detach(&hook, &opts) : bpf_tc_query(&hook, &opts);
	leave_netns(c.saved_netns);
	/* no clsact qdisc (EINVAL) or no such filter (ENOENT): nothing attached */
	if (err == -ENOENT || err == -EINVAL) {
		if (detach)
			CHECK(napi_get_boolean(env, false, &out));
		else
			CHECK(napi_create_uint32(env, 0, &out));
		return out;
	}
	if (err)
		return throw_errno(env, detach ? "detach tc program" : "query tc program", err);
	if (detach)
		CHECK(napi_get_boolean(env, true, &out));
	else
		CHECK(napi_create_uint32(env, opts.prog_id, &out));
	return out;
}

static napi_value tc_detach(napi_env env, napi_callback_info info)
{
	return tc_detach_or_query(env, info, 1);
}

static napi_value tc_query(napi_env env, napi_callback_info info)
{
	return tc_detach_or_query(env, info, 0);
}

/* A ring buffer whose records are delivered on the libuv loop: libbpf's epoll
 * fd becomes readable when a record is there, the loop polls it. Records are
 * handed to JS in batches, one call per loop turn: a call per record costs more
 * than the record's handling, and a turn that read a busy ring dry would starve
 * the rest of the loop. What is left waits for the next turn (the ring's fd
 * stays readable while it holds records). */
#define RING_BATCH_RECORDS 1024

struct ring {
	napi_env env;
	struct ring_buffer *rb;
	int map_fd;
	uv_poll_t poll;
	napi_ref callback;
	napi_async_context async;
	uv_timer_t timer;
	int has_timer;
	int open_handles;
	int closing;
	unsigned char *batch;
	size_t used, capacity;
	unsigned count;
};

static int on_record(void *ctx, void *data, size_t size)
{
	struct ring *r = ctx;
	size_t need = 4 + ((size + 3) & ~(size_t)3);
	uint32_t len = (uint32_t)size;

	if (r->closing)
		return -1;
	if (r->used + need > r->capacity) {
		size_t cap = r->capacity * 2 > r->used + need ? r->capacity * 2 : r->used + need;
		unsigned char *grown = realloc(r->batch, cap);

		if (!grown)
			return -1; /* the record is lost; the next turn goes on */
		r->batch = grown;
		r->capacity = cap;
	}
	memcpy(r->batch + r->used, &len, 4);
	memcpy(r->batch + r->used + 4, data, size);
	memset(r->batch + r->used + 4 + size, 0, need - 4 - size);
	r->used += need;
	/* libbpf has consumed this record before calling: stopping keeps it */
	return ++r->count >= RING_BATCH_RECORDS ? -1 : 0;
}

static void on_readable(uv_poll_t *handle, int status, int events)
{
	struct ring *r = handle->data;
	napi_handle_scope scope;
	napi_value buf, cb, recv, result;
	void *copy;

	if (r->closing)
		return;
	r->used = 0;
	r->count = 0;
	ring_buffer__consume(r->rb);
	if (r->used == 0 || napi_open_handle_scope(r->env, &scope) != napi_ok)
		return;
	if (napi_create_buffer_copy(r->env, r->used, r->batch, &copy, &buf) == napi_ok &&
	    napi_get_reference_value(r->env, r->callback, &cb) == napi_ok &&
	    napi_get_global(r->env, &recv) == napi_ok && /* MakeCallback needs an object */
	    napi_make_callback(r->env, r->async, recv, cb, 1, &buf, &result) != napi_ok) {
		/* the JS side catches what its handler throws; anything that still
		 * escapes is an uncaught exception, as from any other event callback */
		napi_value err;
		bool pending = false;

		napi_is_exception_pending(r->env, &pending);
		if (pending && napi_get_and_clear_last_exception(r->env, &err) == napi_ok)
			napi_fatal_exception(r->env, err);
	}
	napi_close_handle_scope(r->env, scope);
}

static void on_tick(uv_timer_t *timer)
{
	on_readable(&((struct ring *)timer->data)->poll, 0, UV_READABLE);
}

static void on_poll_closed(uv_handle_t *handle)
{
	struct ring *r = handle->data;

	if (--r->open_handles > 0)
		return;
	ring_buffer__free(r->rb);
	free(r->batch);
	close(r->map_fd);
	napi_delete_reference(r->env, r->callback);
	napi_async_destroy(r->env, r->async);
	free(r);
}

static napi_value ring_open(napi_env env, napi_callback_info info)
{
	size_t argc = 3;
	napi_value argv[3], name, out;
	uint32_t poll_ms = 0;
	char path[4096];
	struct ring *r;
	uv_loop_t *loop;
	napi_valuetype t;
	int err;

	CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	if (argc < 2 || get_string(env, argv[0], path, sizeof(path)) ||
	    napi_typeof(env, argv[1], &t) != napi_ok || t != napi_function) {
		napi_throw_type_error(env, NULL, "ringOpen(pinPath, callback, pollMs)");
		return NULL;
	}
	if (argc >= 3 && napi_get_value_uint32(env, argv[2], &poll_ms) != napi_ok)
		poll_ms = 0;
	CHECK(napi_get_uv_event_loop(env, &loop));
	r = calloc(1, sizeof(*r));
	if (!r)
		return throw_errno(env, "ringOpen", ENOMEM);
	r->env = env;
	r->map_fd = bpf_obj_get(path);
	if (r->map_fd < 0) {
		err = errno;
		free(r);
		return throw_errno(env, path, err);
	}
	r->rb = ring_buffer__new(r->map_fd, on_record, r, NULL);
	if (!r->rb) {
		err = errno;
		close(r->map_fd);
		free(r);
		return throw_errno(env, "ring_buffer__new", err);
	}
	CHECK(napi_create_string_utf8(env, "meshid:ringbuf", NAPI_AUTO_LENGTH, &name));
	CHECK(napi_async_init(env, NULL, name, &r->async));
	CHECK(napi_create_reference(env, argv[1], 1, &r->callback));
	err = uv_poll_init(loop, &r->poll, ring_buffer__epoll_fd(r->rb));
	if (err == 0) {
		r->poll.data = r;
		r->open_handles = 1;
		err = uv_poll_start(&r->poll, UV_READABLE, on_readable);
		if (err == 0 && poll_ms > 0 && uv_timer_init(loop, &r->timer) == 0) {
			r->timer.data = r;
			r->has_timer = 1;
			r->open_handles++;
			uv_timer_start(&r->timer, on_tick, poll_ms, poll_ms);
			uv_unref((uv_handle_t *)&r->timer); /* the ring's poll alone keeps the loop alive, as before */
		}
		if (err) {
			r->closing = 1;
			uv_close((uv_handle_t *)&r->poll, on_poll_closed);
		}
	} else {
		ring_buffer__free(r->rb);
		close(r->map_fd);
		napi_delete_reference(env, r->callback);
		napi_async_destroy(env, r->async);
		free(r);
	}
	if (err) {
		napi_throw_error(env, NULL, uv_strerror(err));
		return NULL;
	}
	CHECK(napi_create_external(env, r, NULL, NULL, &out));
	return out;
}

static napi_value ring_close(napi_env env, napi_callback_info info)
{
	size_t argc = 1;
	napi_value argv[1];
	struct ring *r;

	CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	if (argc < 1 || napi_get_value_external(env, argv[0], (void **)&r) != napi_ok) {
		napi_throw_type_error(env, NULL, "ringClose(ring)");
		return NULL;
	}
	if (r->closing)
		return NULL;
	r->closing = 1;
	uv_poll_stop(&r->poll);
	uv_close((uv_handle_t *)&r->poll, on_poll_closed);
	if (r->has_timer) {
		uv_timer_stop(&r->timer);
		uv_close((uv_handle_t *)&r->timer, on_poll_closed);
	}
	return NULL;
}

static napi_value prog_test_run(napi_env env, napi_callback_info info)
{
	size_t argc = 4, len;
	napi_value argv[4], result, v;
	int32_t fd;
	uint32_t repeat, ingress_ifindex;
	void *data;
	struct __sk_buff ctx;
	int err;

	CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	if (argc < 4 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
	    napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok ||
	    napi_get_value_uint32(env, argv[2], &repeat) != napi_ok ||
	    napi_get_value_uint32(env, argv[3], &ingress_ifindex) != napi_ok || repeat == 0) {
		napi_throw_type_error(env, NULL, "progTestRun(progFd, packet, repeat >= 1, ingressIfindex)");
		return NULL;
	}
	/* the context the program sees: only what the kernel lets a test set */
	memset(&ctx, 0, sizeof(ctx));
	ctx.ingress_ifindex = ingress_ifindex;
	LIBBPF_OPTS(bpf_test_run_opts, opts,
		    .data_in = data, .data_size_in = (__u32)len,
		    .ctx_in = &ctx, .ctx_size_in = sizeof(ctx),
		    .repeat = (int)repeat);
	err = bpf_prog_test_run_opts(fd, &opts);
	if (err)
		return throw_errno(env, "bpf_prog_test_run", errno ? errno : -err);
	CHECK(napi_create_object(env, &result));
	CHECK(napi_create_uint32(env, opts.retval, &v));
	CHECK(napi_set_named_property(env, result, "retval", v));
	CHECK(napi_create_uint32(env, opts.duration, &v));
	CHECK(napi_set_named_property(env, result, "durationNs", v));
	return result;
}

static napi_value init(napi_env env, napi_value exports)
{
	napi_property_descriptor props[] = {
		{ "bootTimeNs", NULL, boot_time_ns, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "realTimeMinusBootTimeNs", NULL, real_minus_boot_ns, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "loadObject", NULL, load_object, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "closeFd", NULL, close_fd, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "ifIndex", NULL, if_index, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "tcAttach", NULL, tc_attach, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "tcDetach", NULL, tc_detach, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "tcQuery", NULL, tc_query, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "ringOpen", NULL, ring_open, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "ringClose", NULL, ring_close, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "progTestRun", NULL, prog_test_run, NULL, NULL, NULL, napi_enumerable, NULL },
	};

	libbpf_set_print(capture_libbpf);
	if (napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props) != napi_ok)
		return NULL;
	return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
