/* The pod sandbox process for the test bed's real node (no registry to pull
   registry.k8s.io/pause from): sleeps until SIGINT or SIGTERM and, as PID 1
   of the pod, reaps the zombies that end up with it. Built static by
   scripts/images. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, 0, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction down = {.sa_handler = stop};
  sigaction(SIGINT, &down, 0);
  sigaction(SIGTERM, &down, 0);
  struct sigaction child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
  sigaction(SIGCHLD, &child, 0);
  for (;;) pause();
}
