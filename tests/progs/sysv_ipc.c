/* sysv_ipc: SysV shared memory, semaphores and a message queue, with processes blocked
 * on them.
 *
 *   shm1  IPC_PRIVATE, 10000 bytes, mode 0640, attached: its 3 pages filled (past
 *         its end in the last one too)
 *   shm2  key KEY, 4096 bytes, attached, filled, then removed (IPC_RMID: it lives
 *         while attached, its key shown as 0)
 *   sem   IPC_PRIVATE, 3 semaphores set to 1, 5, 0
 *   msq   key KEY+1, 3 messages of types 1, 2, 3 ("one", "two", "three")
 *   child A blocks in msgrcv(msq, type 99); child B in semop(sem 2, -1)
 * KEY is 0x5c000000 + the pid. Prints "ids SHM1 SHM2 SEM MSQ" and "ready", then
 * "N ok" every 50 ms while both segments hold their bytes ("N BAD what" else). On
 * SIGUSR1 the parent checks the queue (3 messages) and the semaphores (1, 5, 0,
 * one process waiting on the third), prints "state ok" (or "state BAD what"),
 * then sends a message of type 99 ("wake") and adds 1 to semaphore 2: A prints
 * "A got wake", B prints "B got it".
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <time.h>
#include <unistd.h>

#define PG 4096

struct msg {
    long mtype;
    char text[64];
};

static volatile sig_atomic_t woken;

static void on_usr1(int sig)
{
    (void)sig;
    woken = 1;
}

static unsigned char byte_at(int seg, int i)
{
    return (unsigned char)(seg * 31 + i * 7 + i / 4096);
}

static int intact(const unsigned char *p, int seg, int len)
{
    for (int i = 0; i < len; i++)
        if (p[i] != byte_at(seg, i)) return 0;
    return 1;
}

static void tick(void)
{
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

int main(void)
{
    key_t key = 0x5c000000 + getpid();
    int shm1 = shmget(IPC_PRIVATE, 10000, IPC_CREAT | 0640);
    int shm2 = shmget(key, PG, IPC_CREAT | IPC_EXCL | 0600);
    if (shm1 < 0 || shm2 < 0) return 2;
    unsigned char *p1 = shmat(shm1, NULL, 0), *p2 = shmat(shm2, NULL, 0);
    if (p1 == (void *)-1 || p2 == (void *)-1) return 3;
    for (int i = 0; i < 3 * PG; i++) p1[i] = byte_at(1, i);
    for (int i = 0; i < PG; i++) p2[i] = byte_at(2, i);
    if (shmctl(shm2, IPC_RMID, NULL)) return 4;

    int sem = semget(IPC_PRIVATE, 3, IPC_CREAT | 0600);
    unsigned short vals[3] = {1, 5, 0};
    if (sem < 0 || semctl(sem, 0, SETALL, vals)) return 5;
    int msq = msgget(key + 1, IPC_CREAT | IPC_EXCL | 0600);
    if (msq < 0) return 6;
    const char *texts[] = {"one", "two", "three"};
    for (int i = 0; i < 3; i++) {
        struct msg m = {i + 1, ""};
        strcpy(m.text, texts[i]);
        if (msgsnd(msq, &m, strlen(m.text) + 1, 0)) return 6;
    }
    signal(SIGUSR1, on_usr1);
    printf("ids %d %d %d %d\n", shm1, shm2, sem, msq);
    fflush(stdout);

    if (fork() == 0) {
        struct msg m;
        if (msgrcv(msq, &m, sizeof m.text, 99, 0) < 0) printf("A BAD msgrcv\n");
        else printf("A got %s\n", m.text);
        fflush(stdout);
        for (;;) pause();
    }
    if (fork() == 0) {
        struct sembuf op = {2, -1, 0};
        if (semop(sem, &op, 1)) printf("B BAD semop\n");
        else printf("B got it\n");
        fflush(stdout);
        for (;;) pause();
    }
    while (semctl(sem, 2, GETNCNT) != 1) tick();
    printf("ready\n");
    fflush(stdout);
    for (long n = 0;; n++) {
        if (!intact(p1, 1, 3 * PG)) printf("%ld BAD shm1\n", n);
        else if (!intact(p2, 2, PG)) printf("%ld BAD shm2\n", n);
        else printf("%ld ok\n", n);
        fflush(stdout);
        if (woken == 1) {
            woken = 2;
            struct msqid_ds ds;
            const char *bad = NULL;
            if (msgctl(msq, IPC_STAT, &ds) || ds.msg_qnum != 3) bad = "queue";
            else if (semctl(sem, 0, GETVAL) != 1 || semctl(sem, 1, GETVAL) != 5 ||
                     semctl(sem, 2, GETVAL) != 0) bad = "values";
            else if (semctl(sem, 2, GETNCNT) != 1) bad = "waiter";
            printf("state %s%s\n", bad ? "BAD " : "ok", bad ? bad : "");
            struct msg m = {99, "wake"};
            struct sembuf op = {2, 1, 0};
            if (msgsnd(msq, &m, 5, 0) || semop(sem, &op, 1)) printf("state BAD wake\n");
            fflush(stdout);
        }
        tick();
    }
}
