/* Times an LSTM object's NAME_run (T steps at batch B) and NAME_step, one
 * thread: µs per step, the median of 21 samples after 0.3 s of warm-up.
 *
 *   cellc compile examples/lstm.rnn --dims X=256,H=256 --plan hoisted -o build/cell.o
 *   cc -O2 -Ibuild bench/aot/lstm_bench.c build/cell.o -lm -o build/bench && build/bench 1 100
 *
 * bench/aot/compare.sh runs it for both plans beside `cellc bench --threads 1`. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "cell.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int batch = argc > 1 ? atoi(argv[1]) : 1;
    int steps = argc > 2 ? atoi(argv[2]) : 100;
    const float *params[LSTM_PARAM_COUNT];
    for (int k = 0; k < LSTM_PARAM_COUNT; k++) {
        float *p = malloc(LSTM_PARAM_SIZES[k] * sizeof(float));
        for (size_t i = 0; i < LSTM_PARAM_SIZES[k]; i++) p[i] = (float)((i * 37 + k * 11) % 101 - 50) / 2500.0f;
        params[k] = p;
    }
    float *packed = malloc(LSTM_WEIGHTS_LEN * sizeof(float));
    lstm_pack(params, packed);
    float *ws = calloc(lstm_workspace_len(batch), sizeof(float));
    float *xs = malloc((size_t)steps * batch * LSTM_INPUT_X_LEN * sizeof(float));
    float *ys = malloc((size_t)steps * batch * LSTM_OUTPUT_Y_LEN * sizeof(float));
    for (size_t i = 0; i < (size_t)steps * batch * LSTM_INPUT_X_LEN; i++) xs[i] = (float)(i % 13) / 13.0f - 0.5f;
    double samples[21];
    double start = now();
    while (now() - start < 0.3) lstm_run(packed, ws, batch, steps, xs, ys);
    for (int s = 0; s < 21; s++) {
        double t = now();
        int reps = 0;
        do {
            lstm_run(packed, ws, batch, steps, xs, ys);
            reps++;
        } while (now() - t < 0.005);
        samples[s] = (now() - t) * 1e6 / reps / steps;
    }
    qsort(samples, 21, sizeof(double), cmp);
    printf("run  %.3f us/step\n", samples[10]);
    for (int s = 0; s < 21; s++) {
        double t = now();
        int reps = 0;
        do {
            lstm_step(packed, ws, batch, xs, ys);
            reps++;
        } while (now() - t < 0.005);
        samples[s] = (now() - t) * 1e6 / reps;
    }
    qsort(samples, 21, sizeof(double), cmp);
    printf("step %.3f us/step\n", samples[10]);
    return 0;
}
