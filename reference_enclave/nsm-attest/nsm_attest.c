/*
 * nsm-attest: ask the Nitro Secure Module (/dev/nsm) for an attestation document
 * and print the raw NSM response on stdout between marker lines, base64-encoded.
 *
 *   nsm-attest [--nonce HEX] [--user-data HEX]   one request, then exit
 *   nsm-attest --from-cmdline                    nonce from enclave_audit.nonce=HEX
 *                                                in /proc/cmdline
 *
 * Run as PID 1 (the /init of a test initramfs) it mounts /proc and /dev, takes the
 * nonce from the kernel command line, attests once and reboots, which makes QEMU
 * (started with -no-reboot and reboot=t) exit.
 *
 * Output (one document per run):
 *   NSM-ATTEST BEGIN len=<bytes> crc32=<8 hex>
 *   <base64 of the NSM response, 76 characters per line>
 *   NSM-ATTEST END
 * or one line "NSM-ATTEST ERROR <reason>".  With enclave_audit.vsock_port=N on the
 * kernel command line (and --from-cmdline or as PID 1) the same response is also
 * sent over vsock to the parent (CID 3) port N as a 4-byte big-endian length and
 * the bytes, and "NSM-ATTEST VSOCK sent" or "NSM-ATTEST VSOCK failed: ..." is printed.
 * With enclave_audit.serve_port=N it then answers one request from the host over
 * vsock port N (see serve_once), printing "NSM-ATTEST LISTENING N" when ready.  The response is the CBOR the device
 * returned, e.g. {"Attestation": {"document": <COSE_Sign1 bytes>}}.
 *
 * ioctl ABI: include/uapi/linux/nsm.h (Linux >= 6.8):
 *   struct nsm_iovec { __u64 addr; __u64 len; };
 *   struct nsm_raw { struct nsm_iovec request; struct nsm_iovec response; };
 *   NSM_IOCTL_RAW = _IOWR(0x0A, 0, struct nsm_raw)
 * Build: musl-gcc -static -Os -s -o nsm-attest nsm_attest.c
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NSM_REQUEST_MAX 0x1000
#define NSM_RESPONSE_MAX 0x3000
#define NONCE_MAX 512
#define CMDLINE_KEY "enclave_audit.nonce="
#define PORT_KEY "enclave_audit.vsock_port="
#define SERVE_KEY "enclave_audit.serve_port="
#define PARENT_CID 3u

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
struct vsock_addr { /* struct sockaddr_vm from linux/vm_sockets.h */
	unsigned short svm_family;
	unsigned short svm_reserved1;
	unsigned int svm_port;
	unsigned int svm_cid;
	unsigned char svm_flags;
	unsigned char svm_zero[3];
};

struct nsm_iovec {
	uint64_t addr;
	uint64_t len;
};
struct nsm_raw {
	struct nsm_iovec request;
	struct nsm_iovec response;
};
#define NSM_IOCTL_RAW _IOWR(0x0A, 0, struct nsm_raw)

static int fail(const char *what, int err)
{
	if (err)
		printf("NSM-ATTEST ERROR %s: %s\n", what, strerror(err));
	else
		printf("NSM-ATTEST ERROR %s\n", what);
	fflush(stdout);
	return 1;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decode hex up to a NUL, space or newline; returns length or -1. */
static int parse_hex(const char *s, uint8_t *out, size_t cap)
{
	size_t n = 0;
	while (*s && *s != ' ' && *s != '\n') {
		int hi = hexval((unsigned char)s[0]);
		int lo = s[1] ? hexval((unsigned char)s[1]) : -1;
		if (hi < 0 || lo < 0 || n >= cap)
			return -1;
		out[n++] = (uint8_t)(hi << 4 | lo);
		s += 2;
	}
	return (int)n;
}

static size_t put_key(uint8_t *p, const char *key)
{
	size_t len = strlen(key); /* keys here are < 24 bytes */
	p[0] = (uint8_t)(0x60 | len);
	memcpy(p + 1, key, len);
	return len + 1;
}

static size_t put_bstr_or_null(uint8_t *p, const uint8_t *data, int len)
{
	size_t n = 0;
	if (len < 0) {
		p[0] = 0xf6; /* null */
		return 1;
	}
	if (len < 24) {
		p[n++] = (uint8_t)(0x40 | len);
	} else if (len < 256) {
		p[n++] = 0x58;
		p[n++] = (uint8_t)len;
	} else {
		p[n++] = 0x59;
		p[n++] = (uint8_t)(len >> 8);
		p[n++] = (uint8_t)len;
	}
	memcpy(p + n, data, (size_t)len);
	return n + (size_t)len;
}

/* {"Attestation": {"user_data": bstr/null, "nonce": bstr/null, "public_key": null}} */
static size_t encode_request(uint8_t *p, const uint8_t *nonce, int nonce_len,
			     const uint8_t *user_data, int user_len)
{
	size_t n = 0;
	p[n++] = 0xa1;
	n += put_key(p + n, "Attestation");
	p[n++] = 0xa3;
	n += put_key(p + n, "user_data");
	n += put_bstr_or_null(p + n, user_data, user_len);
	n += put_key(p + n, "nonce");
	n += put_bstr_or_null(p + n, nonce, nonce_len);
	n += put_key(p + n, "public_key");
	p[n++] = 0xf6;
	return n;
}

static uint32_t crc32(const uint8_t *p, size_t n)
{
	uint32_t c = 0xffffffffu;
	for (size_t i = 0; i < n; i++) {
		c ^= p[i];
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
	}
	return ~c;
}

static void print_base64(const uint8_t *p, size_t n)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char line[80];
	size_t col = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		line[col++] = tab[(v >> 18) & 63];
		line[col++] = tab[(v >> 12) & 63];
		line[col++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
		line[col++] = i + 2 < n ? tab[v & 63] : '=';
		if (col == 76) {
			line[col] = '\0';
			puts(line);
			col = 0;
		}
	}
	if (col) {
		line[col] = '\0';
		puts(line);
	}
}

static char cmdline[4096];

static int read_cmdline(void)
{
	int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t got = read(fd, cmdline, sizeof cmdline - 1);
	close(fd);
	if (got < 0)
		return -1;
	cmdline[got] = '\0';
	return 0;
}

/* value of "key" (which ends in '=') as a whole word of the command line, or NULL */
static const char *cmdline_value(const char *key)
{
	for (char *s = cmdline; (s = strstr(s, key)) != NULL; s++) {
		if (s == cmdline || s[-1] == ' ')
			return s + strlen(key);
	}
	return NULL;
}

/* nonce length, -1 if absent, -3 if malformed */
static int nonce_from_cmdline(uint8_t *nonce)
{
	const char *value = cmdline_value(CMDLINE_KEY);
	if (!value)
		return -1;
	int n = parse_hex(value, nonce, NONCE_MAX);
	return n < 0 ? -3 : n;
}

static void send_vsock(unsigned int port, const uint8_t *data, size_t len)
{
	struct vsock_addr addr;
	uint8_t head[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
			   (uint8_t)len};
	uint8_t ack = 0;
	int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		printf("NSM-ATTEST VSOCK failed: socket: %s\n", strerror(errno));
		return;
	}
	memset(&addr, 0, sizeof addr);
	addr.svm_family = AF_VSOCK;
	addr.svm_cid = PARENT_CID;
	addr.svm_port = port;
	if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
	    write(fd, head, 4) != 4 || write(fd, data, len) != (ssize_t)len ||
	    read(fd, &ack, 1) != 1) {
		printf("NSM-ATTEST VSOCK failed: %s\n", strerror(errno));
	} else {
		printf("NSM-ATTEST VSOCK sent\n");
	}
	close(fd);
}

static int open_nsm(int wait_seconds)
{
	for (int tries = 0; tries <= wait_seconds * 10; tries++) {
		int fd = open("/dev/nsm", O_RDWR | O_CLOEXEC);
		if (fd >= 0 || errno != ENOENT)
			return fd;
		struct timespec ts = {0, 100 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	return -1;
}

static void as_init(void)
{
	mkdir("/proc", 0555);
	mkdir("/dev", 0755);
	mount("proc", "/proc", "proc", 0, NULL);
	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL); /* EBUSY if the kernel did it */
	if (fcntl(1, F_GETFD) < 0) {
		int fd = open("/dev/console", O_RDWR);
		if (fd >= 0) {
			dup2(fd, 0);
			dup2(fd, 1);
			dup2(fd, 2);
			if (fd > 2)
				close(fd);
		}
	}
}

/* One Attestation request; NULL on success, else what failed (errno set). */
static const char *nsm_attest(const uint8_t *nonce, int nonce_len, const uint8_t *user_data,
			      int user_len, uint8_t *response, size_t *response_len)
{
	static uint8_t request[NSM_REQUEST_MAX];
	int fd = open_nsm(getpid() == 1 ? 30 : 0);
	if (fd < 0)
		return "cannot open /dev/nsm";
	size_t req_len = encode_request(request, nonce, nonce_len, user_data, user_len);
	struct nsm_raw raw = {
		.request = {(uint64_t)(uintptr_t)request, req_len},
		.response = {(uint64_t)(uintptr_t)response, NSM_RESPONSE_MAX},
	};
	if (ioctl(fd, NSM_IOCTL_RAW, &raw) != 0) {
		int err = errno;
		close(fd);
		errno = err;
		return "NSM_IOCTL_RAW";
	}
	close(fd);
	*response_len = raw.response.len > NSM_RESPONSE_MAX ? NSM_RESPONSE_MAX : raw.response.len;
	return NULL;
}

static int read_full(int fd, uint8_t *buf, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t got = read(fd, buf + done, len - done);
		if (got <= 0)
			return -1;
		done += (size_t)got;
	}
	return 0;
}

/*
 * Answer one attestation request over vsock: listen on PORT, accept one connection,
 * read a 4-byte big-endian length and that many nonce bytes (1..512), answer with a
 * 4-byte length and the NSM response.  The host reaches this through the
 * vhost-user backend's "CONNECT <port>" path.
 */
static void serve_once(unsigned int port)
{
	static uint8_t nonce[NONCE_MAX], response[NSM_RESPONSE_MAX];
	struct vsock_addr addr;
	uint8_t head[4];
	size_t len = 0;
	int conn = -1, fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
	memset(&addr, 0, sizeof addr);
	addr.svm_family = AF_VSOCK;
	addr.svm_cid = 0xFFFFFFFFu; /* VMADDR_CID_ANY */
	addr.svm_port = port;
	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 1) != 0) {
		printf("NSM-ATTEST SERVE failed: %s\n", strerror(errno));
		goto out;
	}
	printf("NSM-ATTEST LISTENING %u\n", port);
	fflush(stdout);
	conn = accept(fd, NULL, NULL);
	if (conn < 0 || read_full(conn, head, 4) != 0) {
		printf("NSM-ATTEST SERVE failed: %s\n", strerror(errno));
		goto out;
	}
	uint32_t nonce_len = (uint32_t)head[0] << 24 | (uint32_t)head[1] << 16 |
			     (uint32_t)head[2] << 8 | head[3];
	if (nonce_len == 0 || nonce_len > NONCE_MAX || read_full(conn, nonce, nonce_len) != 0) {
		printf("NSM-ATTEST SERVE failed: bad request\n");
		goto out;
	}
	const char *what = nsm_attest(nonce, (int)nonce_len, NULL, -1, response, &len);
	if (what) {
		printf("NSM-ATTEST SERVE failed: %s: %s\n", what, strerror(errno));
		goto out;
	}
	uint8_t out[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
			  (uint8_t)len};
	if (write(conn, out, 4) != 4 || write(conn, response, len) != (ssize_t)len)
		printf("NSM-ATTEST SERVE failed: %s\n", strerror(errno));
	else
		printf("NSM-ATTEST SERVED %zu\n", len);
out:
	fflush(stdout);
	if (conn >= 0)
		close(conn);
	if (fd >= 0)
		close(fd);
}

static int attest(int argc, char **argv)
{
	static uint8_t nonce[NONCE_MAX], user_data[NONCE_MAX];
	int pid1 = getpid() == 1;
	int nonce_len = -1, user_len = -1, from_cmdline = pid1;

	/* As PID 1, argv holds whatever boot parameters the kernel did not know: ignore it. */
	for (int i = 1; i < argc && !pid1; i++) {
		if (!strcmp(argv[i], "--from-cmdline")) {
			from_cmdline = 1;
		} else if (!strcmp(argv[i], "--nonce") && i + 1 < argc) {
			nonce_len = parse_hex(argv[++i], nonce, sizeof nonce);
			if (nonce_len < 0)
				return fail("--nonce: not hex or longer than 512 bytes", 0);
		} else if (!strcmp(argv[i], "--user-data") && i + 1 < argc) {
			user_len = parse_hex(argv[++i], user_data, sizeof user_data);
			if (user_len < 0)
				return fail("--user-data: not hex or longer than 512 bytes", 0);
		} else {
			return fail("usage: nsm-attest [--from-cmdline] [--nonce HEX] [--user-data HEX]",
				    0);
		}
	}
	if (from_cmdline && read_cmdline() != 0)
		return fail("cannot read /proc/cmdline", errno);
	if (from_cmdline && nonce_len < 0) {
		nonce_len = nonce_from_cmdline(nonce);
		if (nonce_len == -3)
			return fail("bad " CMDLINE_KEY " value (hex, at most 512 bytes)", 0);
	}
	static uint8_t response[NSM_RESPONSE_MAX];
	size_t len = 0;
	const char *what = nsm_attest(nonce, nonce_len, user_data, user_len, response, &len);
	if (what)
		return fail(what, errno);
	printf("NSM-ATTEST BEGIN len=%zu crc32=%08x\n", len, crc32(response, len));
	print_base64(response, len);
	puts("NSM-ATTEST END");
	fflush(stdout);
	const char *port = from_cmdline ? cmdline_value(PORT_KEY) : NULL;
	if (port) {
		send_vsock((unsigned int)strtoul(port, NULL, 10), response, len);
		fflush(stdout);
	}
	const char *serve = from_cmdline ? cmdline_value(SERVE_KEY) : NULL;
	if (serve)
		serve_once((unsigned int)strtoul(serve, NULL, 10));
	return 0;
}

int main(int argc, char **argv)
{
	int pid1 = getpid() == 1;
	if (pid1)
		as_init();
	int rc = attest(argc, argv);
	if (pid1) {
		sync();
		reboot(RB_AUTOBOOT);
		for (;;)
			pause();
	}
	return rc;
}
