/* libcriu_client: a client of criu's own C library, libcriu (what crun and other
 * runtimes link), with SERVICE as its criu binary (libcriu runs it as `SERVICE swrk`).
 *
 *   libcriu_client SERVICE IMAGES version       prints "version N" (criu_get_version)
 *   libcriu_client SERVICE IMAGES check         prints "check R"
 *   libcriu_client SERVICE IMAGES dump PID      prints "dump R"
 *   libcriu_client SERVICE IMAGES restore       prints "restore PID" (the restored root)
 *
 * The log goes to IMAGES/libcriu.log at level 4. Exit 0 when the call succeeded.
 * libcriu's functions are declared here as its criu.h declares them (that header needs
 * protobuf-c's headers, which the criu package does not bring); link with libcriu.so.2.
 */
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int criu_init_opts(void);
int criu_set_service_binary(const char *path);
void criu_set_pid(int pid);
void criu_set_images_dir_fd(int fd);
void criu_set_log_level(int log_level);
int criu_set_log_file(const char *log_file);
int criu_check(void);
int criu_dump(void);
int criu_restore(void);
int criu_get_version(void);

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s SERVICE IMAGES version|check|dump PID|restore\n", argv[0]);
        return 2;
    }
    if (criu_init_opts() < 0) {
        fprintf(stderr, "criu_init_opts failed\n");
        return 1;
    }
    criu_set_service_binary(argv[1]);
    int dir = open(argv[2], O_DIRECTORY | O_RDONLY);
    if (dir < 0) {
        perror(argv[2]);
        return 1;
    }
    criu_set_images_dir_fd(dir);
    criu_set_log_file("libcriu.log");
    criu_set_log_level(4);
    int ret;
    if (!strcmp(argv[3], "version")) {
        ret = criu_get_version();
        printf("version %d\n", ret);
        return ret > 0 ? 0 : 1;
    } else if (!strcmp(argv[3], "check")) {
        ret = criu_check();
        printf("check %d\n", ret);
    } else if (!strcmp(argv[3], "dump") && argc > 4) {
        criu_set_pid(atoi(argv[4]));
        ret = criu_dump();
        printf("dump %d\n", ret);
    } else if (!strcmp(argv[3], "restore")) {
        ret = criu_restore();
        printf("restore %d\n", ret);
        return ret > 0 ? 0 : 1;
    } else {
        fprintf(stderr, "unknown request %s\n", argv[3]);
        return 2;
    }
    return ret == 0 ? 0 : 1;
}
