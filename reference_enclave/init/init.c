/*
 * init for the reference enclave image (PID 1 in a Nitro enclave).
 *
 * Ramdisk layout (as nitro-cli lays it out):
 *   bootstrap ramdisk:   /init (this program), /dev, /dev/console
 *   application ramdisk: /rootfs/... (the application filesystem),
 *                        /cmd (argv, one element per line),
 *                        /env (environment, KEY=VALUE per line)
 *
 * Steps: mount /proc, /sys and /dev; bring up loopback; send the Nitro boot
 * heartbeat (byte 0xB7 to CID 3 port 9000 over vsock, expecting it echoed;
 * carries on if nobody answers); mount /proc, /sys, /dev, /dev/shm, /tmp and
 * /run inside /rootfs; chroot into it; run cmd with exactly the environment
 * of env; reap every child; power off when cmd exits.
 *
 * Static (musl), no dates, no paths: built deterministically by builder/init.py.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

#define HEARTBEAT_CID 3u
#define HEARTBEAT_PORT 9000u
#define HEARTBEAT_BYTE 0xB7
#define MAX_FILE (256 * 1024)
#define MAX_ITEMS 1024

struct vsock_addr { /* struct sockaddr_vm from linux/vm_sockets.h */
    unsigned short svm_family;
    unsigned short svm_reserved1;
    unsigned int svm_port;
    unsigned int svm_cid;
    unsigned char svm_flags;
    unsigned char svm_zero[3];
};

static void say(const char *fmt, ...)
{
    va_list ap;
    fputs("init: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void halt_now(void)
{
    sync();
    reboot(RB_POWER_OFF);
    reboot(RB_AUTOBOOT);
    for (;;)
        pause();
}

static void die(const char *what)
{
    say("fatal: %s: %s", what, strerror(errno));
    halt_now();
}

static void mount_one(const char *src, const char *dst, const char *type,
                      unsigned long flags, const char *data)
{
    if (mkdir(dst, 0755) != 0 && errno != EEXIST)
        die(dst);
    if (mount(src, dst, type, flags, data) != 0 && errno != EBUSY)
        die(dst);
}

static void console_stdio(void)
{
    int fd = open("/dev/console", O_RDWR | O_NOCTTY);
    if (fd < 0)
        return;
    dup2(fd, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    if (fd > 2)
        close(fd);
}

static void loopback_up(void)
{
    struct ifreq ifr;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    if (ioctl(fd, SIOCGIFFLAGS, &ifr) == 0) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        if (ioctl(fd, SIOCSIFFLAGS, &ifr) != 0)
            say("loopback: %s", strerror(errno));
    }
    close(fd);
}

/* Tell the Nitro hypervisor we booted; not fatal when no one listens. */
static void heartbeat(void)
{
    struct vsock_addr addr;
    struct timeval tv = {.tv_sec = 3, .tv_usec = 0};
    unsigned char byte = HEARTBEAT_BYTE, echo = 0;
    int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        say("heartbeat: no vsock (%s), skipped", strerror(errno));
        return;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    memset(&addr, 0, sizeof addr);
    addr.svm_family = AF_VSOCK;
    addr.svm_cid = HEARTBEAT_CID;
    addr.svm_port = HEARTBEAT_PORT;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        say("heartbeat: connect: %s (continuing)", strerror(errno));
    } else if (write(fd, &byte, 1) != 1) {
        say("heartbeat: write: %s (continuing)", strerror(errno));
    } else if (read(fd, &echo, 1) != 1) {
        say("heartbeat: no echo: %s (continuing)", strerror(errno));
    } else if (echo != HEARTBEAT_BYTE) {
        say("heartbeat: unexpected echo 0x%02x (continuing)", echo);
    } else {
        say("heartbeat: acknowledged");
    }
    close(fd);
}

/* Read a small file and split it into lines (NUL-terminated in place). */
static char **read_lines(const char *path, int required)
{
    static char *none[1] = {NULL};
    char *buf, **items;
    size_t len = 0, count = 0;
    ssize_t got;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (!required && errno == ENOENT)
            return none;
        die(path);
    }
    buf = calloc(MAX_FILE + 1, 1);
    items = calloc(MAX_ITEMS + 1, sizeof *items);
    if (!buf || !items)
        die("calloc");
    while (len < MAX_FILE && (got = read(fd, buf + len, MAX_FILE - len)) > 0)
        len += (size_t)got;
    close(fd);
    for (char *p = buf; p < buf + len && count < MAX_ITEMS;) {
        char *nl = memchr(p, '\n', (size_t)(buf + len - p));
        if (nl)
            *nl = '\0';
        if (*p)
            items[count++] = p;
        if (!nl)
            break;
        p = nl + 1;
    }
    items[count] = NULL;
    return items;
}

/* QEMU nitro-enclave check (verifier/qemu): run /nsm-attest when QEMU's unmeasured
 * -append asks for it (" enclave_audit.attest=1").  Real Nitro has no unmeasured
 * command line, so this never runs there; /nsm-attest only reads an attestation
 * document from the NSM and prints it. */
static void qemu_attest(void)
{
    char line[4096];
    ssize_t got;
    pid_t pid;
    int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    got = read(fd, line, sizeof line - 1);
    close(fd);
    if (got <= 0)
        return;
    line[got] = '\0';
    if (!strstr(line, " enclave_audit.attest=1"))
        return;
    pid = fork();
    if (pid == 0) {
        char *argv[] = {"/nsm-attest", "--from-cmdline", NULL};
        execv(argv[0], argv);
        say("exec /nsm-attest: %s", strerror(errno));
        _exit(127);
    }
    if (pid > 0)
        waitpid(pid, NULL, 0);
}

int main(void)
{
    char **argv, **envp;
    pid_t child;
    int status = 0;

    umask(022);
    mount_one("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    console_stdio();
    mount_one("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_one("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    loopback_up();
    heartbeat();
    qemu_attest();

    argv = read_lines("/cmd", 1);
    envp = read_lines("/env", 0);
    if (!argv[0]) {
        errno = EINVAL;
        die("/cmd is empty");
    }

    mount_one("proc", "/rootfs/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_one("sysfs", "/rootfs/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_one("devtmpfs", "/rootfs/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    mount_one("tmpfs", "/rootfs/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    mount_one("tmpfs", "/rootfs/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    mount_one("tmpfs", "/rootfs/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
    if (chroot("/rootfs") != 0 || chdir("/") != 0)
        die("chroot /rootfs");

    child = fork();
    if (child < 0)
        die("fork");
    if (child == 0) {
        setsid();
        execve(argv[0], argv, envp);
        say("exec %s: %s", argv[0], strerror(errno));
        _exit(127);
    }
    for (;;) {
        pid_t pid = waitpid(-1, &status, 0);
        if (pid < 0 && errno == EINTR)
            continue;
        if (pid < 0 || pid == child)
            break;
    }
    if (WIFEXITED(status))
        say("%s exited with status %d", argv[0], WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        say("%s killed by signal %d", argv[0], WTERMSIG(status));
    halt_now();
    return 0;
}
