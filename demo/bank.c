/* The observer demo: four tellers move money between three accounts. Each
 * transfer locks the source account, then the destination: two tellers
 * moving money in opposite directions deadlock (the classic lock-order bug),
 * usually within a few milliseconds. A shared audit log lock is contended
 * on every transfer. Build: gcc -O2 -g -pthread -o bank demo/bank.c */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct account {
    pthread_mutex_t lock;
    long balance;
};

struct account account_alice = {PTHREAD_MUTEX_INITIALIZER, 1000};
struct account account_bob = {PTHREAD_MUTEX_INITIALIZER, 1000};
struct account account_carol = {PTHREAD_MUTEX_INITIALIZER, 1000};
pthread_mutex_t audit_log_lock = PTHREAD_MUTEX_INITIALIZER;
static long audit_entries;

static struct account *const accounts[] = {&account_alice, &account_bob, &account_carol};

static void audit(long amount)
{
    pthread_mutex_lock(&audit_log_lock);
    audit_entries++;
    usleep(20); /* writing the log line */
    (void)amount;
    pthread_mutex_unlock(&audit_log_lock);
}

/* The bug: locks are taken in argument order, not in a global order. */
static void transfer(struct account *from, struct account *to, long amount)
{
    pthread_mutex_lock(&from->lock);
    usleep(100); /* checking the balance */
    pthread_mutex_lock(&to->lock);
    from->balance -= amount;
    to->balance += amount;
    pthread_mutex_unlock(&to->lock);
    pthread_mutex_unlock(&from->lock);
    audit(amount);
}

static void *teller(void *arg)
{
    long id = (long)arg;
    char name[16];
    snprintf(name, sizeof name, "teller-%ld", id);
    pthread_setname_np(pthread_self(), name);
    unsigned seed = (unsigned)id * 7919u;
    for (;;) {
        int a = rand_r(&seed) % 3, b = rand_r(&seed) % 3;
        if (a != b)
            transfer(accounts[a], accounts[b], 1 + rand_r(&seed) % 50);
    }
    return NULL;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("bank: 4 tellers, 3 accounts; transfers lock source then destination\n");
    pthread_t t[4];
    for (long i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, teller, (void *)(i + 1));
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    return 0;
}
