/* The real node's sandbox ("pause") process: holds the pod's namespaces open and does nothing
 * until it is told to stop. Built static, so its image is this one file. */
#include <signal.h>
#include <unistd.h>

static void stop(int sig) {
    (void)sig;
    _exit(0);
}

int main(void) {
    signal(SIGTERM, stop);
    signal(SIGINT, stop);
    for (;;) pause();
}
