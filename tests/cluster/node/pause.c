/* The pod sandbox ("pause") process of the test node: holds the pod's namespaces, reaps orphans (it is PID 1
 * of the pod when the PID namespace is shared) and exits on SIGTERM/SIGINT. Built static by cluster.sh
 * node-up, because no registry can be reached to pull one. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { _exit(128 + sig); }

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, 0, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction q = {.sa_handler = quit}, r = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
  sigaction(SIGTERM, &q, 0);
  sigaction(SIGINT, &q, 0);
  sigaction(SIGCHLD, &r, 0);
  for (;;) pause();
}
