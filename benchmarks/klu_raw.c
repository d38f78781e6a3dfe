/*
 * klu_raw.c: the "physical limit" contender of the klujax benchmarks.
 *
 * Calls the system SuiteSparse KLU directly (klu_defaults, int32 indices, CSC input),
 * single-threaded, no Python, no copies other than the right-hand side into the solve
 * buffer. Built on demand by benchmarks/run.py:
 *
 *   cc -O2 benchmarks/klu_raw.c -I/usr/include/suitesparse \
 *      -lklu -lamd -lcolamd -lbtf -lsuitesparseconfig -lm -o benchmarks/build/klu_raw
 *
 * Input file (little endian, written by benchmarks/systems.py:write_raw):
 *   char[8]  "KLURAW1\0"
 *   int32    n, is_complex, batch
 *   int64    nnz
 *   int32    Ap[n+1], Ai[nnz]                  (CSC, sorted, no duplicates)
 *   double   values[batch][nnz]   (x2 interleaved re/im when complex)
 *   double   rhs[batch][n]        (x2 interleaved re/im when complex)
 *
 * Two modes:
 *   klu_raw FILE [TARGET_MS]      time every operation once and print one JSON object
 *   klu_raw --serve               line protocol on stdin/stdout (used by run.py):
 *       load ID PATH                       -> {"ok":true,"n":..,"nnz":..,...}
 *       run ID OP TARGET_NS MINREPS MAXREPS BATCH WARMUP
 *                                          -> {"ok":true,"op":..,"wall_med_ns":..,...}
 *       drop ID | quit
 *
 * Operations (every timed "call" is one rep; a per-call median is reported):
 *   analyze   klu_analyze                               (symbolic freed outside timing)
 *   factor    klu_factor with a fixed analysis          (numeric freed outside timing)
 *   refactor  klu_refactor of member (rep % batch) into one numeric object
 *   solve     copy b + klu_solve with a fixed factorization
 *   tsolve    copy b + klu_tsolve (plain transpose, conj_solve = 0 for complex)
 *   afs       analyze + factor + solve + free both       (a one-shot solve)
 *   fs        factor + solve + free numeric              (analysis reused)
 *   rs        refactor + solve                           (analysis and numeric reused)
 *   batch_rs  BATCH x (refactor member m + solve member m); per-member time reported
 *
 * After timing, every operation checks its result: max over the members it touched of
 * ||A x - b|| / ||b|| (A^T for tsolve); "resid" in the output.
 */
#define _POSIX_C_SOURCE 200809L
#include <klu.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_MATS 256

typedef struct {
    int used;
    int n, cplx, batch;
    int64_t nnz;
    int *Ap, *Ai;
    double *vals; /* batch * nnz * (1 + cplx) */
    double *rhs;  /* batch * n * (1 + cplx) */
} Mat;

static Mat mats[MAX_MATS];

static double now_ns(clockid_t clk) {
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void free_mat(Mat *m) {
    free(m->Ap); free(m->Ai); free(m->vals); free(m->rhs);
    memset(m, 0, sizeof(*m));
}

static int read_exact(FILE *f, void *buf, size_t size, size_t count) {
    return fread(buf, size, count, f) == count;
}

static const char *load_mat(Mat *m, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return "cannot open file";
    char magic[8];
    int32_t hdr[3];
    int64_t nnz;
    if (!read_exact(f, magic, 1, 8) || memcmp(magic, "KLURAW1", 8) != 0) { fclose(f); return "bad magic"; }
    if (!read_exact(f, hdr, 4, 3) || !read_exact(f, &nnz, 8, 1)) { fclose(f); return "short header"; }
    m->n = hdr[0]; m->cplx = hdr[1]; m->batch = hdr[2]; m->nnz = nnz;
    if (m->n <= 0 || m->batch <= 0 || nnz <= 0 || nnz > INT32_MAX) { fclose(f); return "bad sizes"; }
    const size_t w = m->cplx ? 2 : 1;
    m->Ap = malloc(sizeof(int) * (size_t)(m->n + 1));
    m->Ai = malloc(sizeof(int) * (size_t)nnz);
    m->vals = malloc(sizeof(double) * w * (size_t)nnz * (size_t)m->batch);
    m->rhs = malloc(sizeof(double) * w * (size_t)m->n * (size_t)m->batch);
    if (!m->Ap || !m->Ai || !m->vals || !m->rhs) { fclose(f); free_mat(m); return "out of memory"; }
    int ok = read_exact(f, m->Ap, 4, (size_t)m->n + 1) && read_exact(f, m->Ai, 4, (size_t)nnz) &&
             read_exact(f, m->vals, 8, w * (size_t)nnz * (size_t)m->batch) &&
             read_exact(f, m->rhs, 8, w * (size_t)m->n * (size_t)m->batch);
    fclose(f);
    if (!ok) { free_mat(m); return "short file"; }
    m->used = 1;
    return NULL;
}

static double *member_vals(const Mat *m, int k) {
    return m->vals + (size_t)(k % m->batch) * (size_t)m->nnz * (m->cplx ? 2 : 1);
}
static double *member_rhs(const Mat *m, int k) {
    return m->rhs + (size_t)(k % m->batch) * (size_t)m->n * (m->cplx ? 2 : 1);
}

/* ||op(A) x - b|| / ||b|| with A in CSC (member vk's values, member bk's right-hand
 * side), op = A or A^T. */
static double residual(const Mat *m, int vk, int bk, const double *x, int transpose) {
    const int n = m->n, c = m->cplx;
    const double *v = member_vals(m, vk), *b = member_rhs(m, bk);
    double *r = calloc((size_t)n * (c ? 2 : 1), sizeof(double));
    if (!r) return INFINITY;
    for (int j = 0; j < n; ++j) {
        for (int p = m->Ap[j]; p < m->Ap[j + 1]; ++p) {
            int i = m->Ai[p];
            int row = transpose ? j : i, col = transpose ? i : j;
            if (c) {
                double ar = v[2 * p], ai = v[2 * p + 1], xr = x[2 * col], xi = x[2 * col + 1];
                r[2 * row] += ar * xr - ai * xi;
                r[2 * row + 1] += ar * xi + ai * xr;
            } else {
                r[row] += v[p] * x[col];
            }
        }
    }
    double num = 0, den = 0;
    for (int i = 0; i < n * (c ? 2 : 1); ++i) {
        double d = r[i] - b[i];
        num += d * d;
        den += b[i] * b[i];
    }
    free(r);
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static klu_numeric *do_factor(const Mat *m, int k, klu_symbolic *S, klu_common *C) {
    return m->cplx ? klu_z_factor(m->Ap, m->Ai, member_vals(m, k), S, C)
                   : klu_factor(m->Ap, m->Ai, member_vals(m, k), S, C);
}
static int do_refactor(const Mat *m, int k, klu_symbolic *S, klu_numeric *N, klu_common *C) {
    return m->cplx ? klu_z_refactor(m->Ap, m->Ai, member_vals(m, k), S, N, C)
                   : klu_refactor(m->Ap, m->Ai, member_vals(m, k), S, N, C);
}
static int do_solve(const Mat *m, int k, klu_symbolic *S, klu_numeric *N, double *x, int transpose,
                    klu_common *C) {
    memcpy(x, member_rhs(m, k), sizeof(double) * (size_t)m->n * (m->cplx ? 2 : 1));
    if (transpose)
        return m->cplx ? klu_z_tsolve(S, N, m->n, 1, x, 0, C) : klu_tsolve(S, N, m->n, 1, x, C);
    return m->cplx ? klu_z_solve(S, N, m->n, 1, x, C) : klu_solve(S, N, m->n, 1, x, C);
}
static void do_free_numeric(const Mat *m, klu_numeric **N, klu_common *C) {
    if (m->cplx) klu_z_free_numeric(N, C); else klu_free_numeric(N, C);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    double wall_med, wall_min, wall_max, cpu_med, resid;
    int reps, per;
    const char *err;
} Result;

enum { OP_ANALYZE, OP_FACTOR, OP_REFACTOR, OP_SOLVE, OP_TSOLVE, OP_AFS, OP_FS, OP_RS, OP_BATCH_RS, OP_COUNT };
static const char *op_names[OP_COUNT] = {"analyze", "factor", "refactor", "solve", "tsolve",
                                         "afs", "fs", "rs", "batch_rs"};

/* One timed call of `op` (rep index k). Returns 0 on failure. */
static int one_call(const Mat *m, int op, int k, int batch, klu_symbolic *S, klu_numeric *N,
                    double *x, klu_common *C, double *wall, double *cpu) {
    double w0 = now_ns(CLOCK_MONOTONIC), c0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
    int ok = 1;
    klu_symbolic *S2 = NULL;
    klu_numeric *N2 = NULL;
    switch (op) {
    case OP_ANALYZE:
        S2 = klu_analyze(m->n, m->Ap, m->Ai, C); ok = S2 != NULL; break;
    case OP_FACTOR:
        N2 = do_factor(m, k, S, C); ok = N2 != NULL; break;
    case OP_REFACTOR:
        ok = do_refactor(m, k, S, N, C); break;
    case OP_SOLVE:
        ok = do_solve(m, k, S, N, x, 0, C); break;
    case OP_TSOLVE:
        ok = do_solve(m, k, S, N, x, 1, C); break;
    case OP_AFS:
        S2 = klu_analyze(m->n, m->Ap, m->Ai, C);
        N2 = S2 ? do_factor(m, k, S2, C) : NULL;
        ok = N2 && do_solve(m, k, S2, N2, x, 0, C);
        do_free_numeric(m, &N2, C);
        klu_free_symbolic(&S2, C);
        break;
    case OP_FS:
        N2 = do_factor(m, k, S, C);
        ok = N2 && do_solve(m, k, S, N2, x, 0, C);
        do_free_numeric(m, &N2, C);
        break;
    case OP_RS:
        ok = do_refactor(m, k, S, N, C) && do_solve(m, k, S, N, x, 0, C); break;
    case OP_BATCH_RS:
        for (int b = 0; b < batch && ok; ++b)
            ok = do_refactor(m, b, S, N, C) && do_solve(m, b, S, N, x + (size_t)b * m->n * (m->cplx ? 2 : 1), 0, C);
        break;
    }
    *wall = now_ns(CLOCK_MONOTONIC) - w0;
    *cpu = now_ns(CLOCK_THREAD_CPUTIME_ID) - c0;
    /* objects created by analyze / factor are released outside the timed region */
    if (S2) klu_free_symbolic(&S2, C);
    if (N2) do_free_numeric(m, &N2, C);
    return ok;
}

static Result run_op(const Mat *m, int op, double target_ns, int min_reps, int max_reps, int batch,
                     int warmup) {
    Result r = {0};
    klu_common C;
    klu_defaults(&C);
    if (batch < 1) batch = 1;
    if (batch > m->batch) batch = m->batch;
    if (op != OP_BATCH_RS) batch = 1;
    r.per = batch;
    const size_t w = m->cplx ? 2 : 1;
    double *x = malloc(sizeof(double) * w * (size_t)m->n * (size_t)batch);
    klu_symbolic *S = klu_analyze(m->n, m->Ap, m->Ai, &C);
    klu_numeric *N = S ? do_factor(m, 0, S, &C) : NULL;
    if (!x || !S || !N) { r.err = "setup (analyze/factor) failed"; goto done; }

    double wall, cpu, first = 0;
    for (int i = 0; i < (warmup < 1 ? 1 : warmup); ++i) {
        if (!one_call(m, op, i, batch, S, N, x, &C, &wall, &cpu)) { r.err = "KLU call failed"; goto done; }
        first = wall;
    }
    int reps = first > 0 ? (int)(target_ns / first) : max_reps;
    if (reps < min_reps) reps = min_reps;
    if (reps > max_reps) reps = max_reps;
    double *ws = malloc(sizeof(double) * (size_t)reps), *cs = malloc(sizeof(double) * (size_t)reps);
    if (!ws || !cs) { free(ws); free(cs); r.err = "out of memory"; goto done; }
    int k_last = 0;
    for (int i = 0; i < reps; ++i) {
        k_last = i + 1;
        if (!one_call(m, op, k_last, batch, S, N, x, &C, &ws[i], &cs[i])) {
            free(ws); free(cs); r.err = "KLU call failed"; goto done;
        }
    }
    qsort(ws, (size_t)reps, sizeof(double), cmp_double);
    qsort(cs, (size_t)reps, sizeof(double), cmp_double);
    r.reps = reps;
    r.wall_med = ws[reps / 2] / batch;
    r.wall_min = ws[0] / batch;
    r.wall_max = ws[reps - 1] / batch;
    r.cpu_med = cs[reps / 2] / batch;
    free(ws); free(cs);

    /* verification (untimed) */
    r.resid = 0;
    if (op == OP_BATCH_RS) {
        for (int b = 0; b < batch; ++b) {
            double e = residual(m, b, b, x + (size_t)b * m->n * w, 0);
            if (!(e <= r.resid)) r.resid = e;
        }
    } else {
        int k = k_last;
        if (op == OP_ANALYZE || op == OP_FACTOR) {
            /* check that the analysis / factorization produced is usable */
            klu_symbolic *S2 = op == OP_ANALYZE ? klu_analyze(m->n, m->Ap, m->Ai, &C) : S;
            klu_numeric *N2 = S2 ? do_factor(m, k, S2, &C) : NULL;
            r.resid = N2 && do_solve(m, k, S2, N2, x, 0, &C) ? residual(m, k, k, x, 0) : INFINITY;
            if (N2) do_free_numeric(m, &N2, &C);
            if (op == OP_ANALYZE && S2) klu_free_symbolic(&S2, &C);
        } else if (op == OP_REFACTOR) {
            /* N holds member k_last's refactorization */
            r.resid = do_solve(m, k, S, N, x, 0, &C) ? residual(m, k, k, x, 0) : INFINITY;
        } else {
            /* solve / tsolve use the factorization of member 0 with member k's rhs */
            int vk = (op == OP_SOLVE || op == OP_TSOLVE) ? 0 : k;
            r.resid = residual(m, vk, k, x, op == OP_TSOLVE);
        }
    }
done:
    if (N) do_free_numeric(m, &N, &C);
    if (S) klu_free_symbolic(&S, &C);
    free(x);
    return r;
}

static void print_result(const char *op, const Result *r, const char *prefix, const char *suffix) {
    if (r->err) {
        printf("%s{\"ok\":false,\"op\":\"%s\",\"error\":\"%s\"}%s", prefix, op, r->err, suffix);
        return;
    }
    printf("%s{\"ok\":true,\"op\":\"%s\",\"reps\":%d,\"per\":%d,\"wall_med_ns\":%.1f,"
           "\"wall_min_ns\":%.1f,\"wall_max_ns\":%.1f,\"cpu_med_ns\":%.1f,\"resid\":%.3e}%s",
           prefix, op, r->reps, r->per, r->wall_med, r->wall_min, r->wall_max, r->cpu_med,
           isfinite(r->resid) ? r->resid : 1e300, suffix);
}

static int op_index(const char *name) {
    for (int i = 0; i < OP_COUNT; ++i)
        if (strcmp(name, op_names[i]) == 0) return i;
    return -1;
}

static int serve(void) {
    char line[4096];
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("{\"ok\":true,\"ready\":true,\"klu_version\":\"%d.%d.%d\"}\n", KLU_MAIN_VERSION,
           KLU_SUB_VERSION, KLU_SUBSUB_VERSION);
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
        char cmd[32] = {0}, arg[4000] = {0}, opname[32] = {0};
        int id = -1;
        if (sscanf(line, "%31s", cmd) != 1) continue;
        if (strcmp(cmd, "quit") == 0) break;
        if (strcmp(cmd, "load") == 0) {
            if (sscanf(line, "%*s %d %3999s", &id, arg) != 2 || id < 0 || id >= MAX_MATS) {
                printf("{\"ok\":false,\"error\":\"usage: load ID PATH\"}\n");
            } else {
                if (mats[id].used) free_mat(&mats[id]);
                const char *err = load_mat(&mats[id], arg);
                if (err) printf("{\"ok\":false,\"error\":\"%s\"}\n", err);
                else printf("{\"ok\":true,\"n\":%d,\"nnz\":%lld,\"complex\":%d,\"batch\":%d}\n",
                            mats[id].n, (long long)mats[id].nnz, mats[id].cplx, mats[id].batch);
            }
        } else if (strcmp(cmd, "drop") == 0) {
            if (sscanf(line, "%*s %d", &id) == 1 && id >= 0 && id < MAX_MATS && mats[id].used) free_mat(&mats[id]);
            printf("{\"ok\":true}\n");
        } else if (strcmp(cmd, "run") == 0) {
            double target = 0;
            int min_reps = 3, max_reps = 1000, batch = 1, warmup = 1;
            int got = sscanf(line, "%*s %d %31s %lf %d %d %d %d", &id, opname, &target, &min_reps,
                             &max_reps, &batch, &warmup);
            int op = op_index(opname);
            if (got < 3 || id < 0 || id >= MAX_MATS || !mats[id].used || op < 0) {
                printf("{\"ok\":false,\"error\":\"bad run command or unknown matrix/op\"}\n");
            } else {
                Result r = run_op(&mats[id], op, target, min_reps, max_reps, batch, warmup);
                print_result(opname, &r, "", "\n");
            }
        } else {
            printf("{\"ok\":false,\"error\":\"unknown command\"}\n");
        }
        fflush(stdout);
    }
    for (int i = 0; i < MAX_MATS; ++i)
        if (mats[i].used) free_mat(&mats[i]);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "--serve") == 0) return serve();
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE [TARGET_MS] | --serve\n", argv[0]);
        return 2;
    }
    double target_ns = (argc >= 3 ? atof(argv[2]) : 50.0) * 1e6;
    Mat m = {0};
    const char *err = load_mat(&m, argv[1]);
    if (err) {
        fprintf(stderr, "klu_raw: %s: %s\n", argv[1], err);
        return 1;
    }
    printf("{\"file\":\"%s\",\"n\":%d,\"nnz\":%lld,\"complex\":%d,\"batch\":%d,\"results\":[\n",
           argv[1], m.n, (long long)m.nnz, m.cplx, m.batch);
    for (int op = 0; op < OP_COUNT; ++op) {
        Result r = run_op(&m, op, target_ns, 3, 100000, m.batch, 2);
        print_result(op_names[op], &r, "  ", op + 1 < OP_COUNT ? ",\n" : "\n");
    }
    printf("]}\n");
    free_mat(&m);
    return 0;
}
