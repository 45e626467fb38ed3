/* Escape probes for syscalls busybox has no applet for. Prints one word per attempt:
 * "DENIED <errno name>" or "ALLOWED". Exit status 0 means every attempt was denied. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>

static int report(const char *what, long rc) {
    if (rc < 0) {
        printf("%s DENIED %s\n", what, strerror(errno));
        return 0;
    }
    printf("%s ALLOWED %ld\n", what, rc);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *cmd = argv[1];
    char buf[256];
    if (!strcmp(cmd, "keyctl-read") && argc > 2) {
        long key = strtol(argv[2], 0, 10);
        memset(buf, 0, sizeof buf);
        long rc = syscall(SYS_keyctl, 11 /* KEYCTL_READ */, key, buf, sizeof buf - 1, 0);
        if (rc >= 0) printf("read: %s\n", buf);
        return report("keyctl-read", rc);
    }
    if (!strcmp(cmd, "keyctl-user")) {
        /* KEYCTL_GET_KEYRING_ID of the user keyring (-4). */
        return report("keyctl-user", syscall(SYS_keyctl, 0, -4, 0, 0, 0));
    }
    if (!strcmp(cmd, "add-key")) {
        return report("add-key", syscall(SYS_add_key, "user", "sbx", "x", 1, -4));
    }
    if (!strcmp(cmd, "ptrace") && argc > 2) {
        pid_t pid = atoi(argv[2]);
        return report("ptrace", ptrace(PTRACE_ATTACH, pid, 0, 0));
    }
    if (!strcmp(cmd, "ptrace-child")) {
        /* ptrace inside the sandbox stays allowed: attach to our own child. */
        pid_t c = fork();
        if (c == 0) { pause(); _exit(0); }
        long rc = ptrace(PTRACE_ATTACH, c, 0, 0);
        kill(c, SIGKILL);
        waitpid(c, 0, 0);
        return rc < 0 ? 1 : 0;
    }
    if (!strcmp(cmd, "vsock")) {
        return report("vsock", socket(40 /* AF_VSOCK */, SOCK_STREAM, 0));
    }
    if (!strcmp(cmd, "userns")) {
        int bad = report("unshare-user", unshare(CLONE_NEWUSER));
        bad |= report("clone-user", syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0) );
        return bad;
    }
    if (!strcmp(cmd, "module")) {
        int bad = report("init_module", syscall(SYS_init_module, buf, sizeof buf, ""));
        bad |= report("finit_module", syscall(SYS_finit_module, 0, "", 0));
        bad |= report("delete_module", syscall(SYS_delete_module, "loop", 0));
        return bad;
    }
    if (!strcmp(cmd, "chroot-escape") && argc > 2) {
        /* The classic: chroot into a subdirectory while keeping cwd outside it, then walk up
         * and chroot again. argv[2] is a host path that must stay invisible. */
        mkdir("/tmp/jail", 0755);
        if (chroot("/tmp/jail") < 0) printf("chroot DENIED %s\n", strerror(errno));
        for (int i = 0; i < 64; i++) chdir("..");
        chroot(".");
        FILE *f = fopen("/etc/shadow", "r");
        if (f && fgets(buf, sizeof buf, f)) printf("shadow: %s", buf);
        if (getcwd(buf, sizeof buf)) printf("cwd: %s\n", buf);
        if (access(argv[2], F_OK) == 0) printf("HOST VISIBLE %s\n", argv[2]);
        else printf("host path hidden\n");
        return 0;
    }
    return 2;
}
