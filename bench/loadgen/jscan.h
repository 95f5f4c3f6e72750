/* A small JSON scanner: enough for the runner's job and commands (one flat object
 * of numbers, strings, arrays of numbers and one object of numbers). It finds the
 * extent of each value and leaves decoding to the caller; it allocates nothing. */
#ifndef GCHAT_LOAD_JSCAN_H
#define GCHAT_LOAD_JSCAN_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    const char *p; /* the first byte of the text (a string's opening quote included) */
    size_t n;      /* its length */
} jspan;

/* Calls fn for each member of the object in `text`: the key (the raw bytes between its
 * quotes) and the value's span. Stops at the first nonzero fn result. 0 when the
 * whole text was one object, -1 when it is not JSON this scanner understands. */
int jscan_object(jspan text, int (*fn)(void *ctx, jspan key, jspan value), void *ctx);

/* The same for the items of an array. */
int jscan_array(jspan text, int (*fn)(void *ctx, jspan item), void *ctx);

bool jspan_is(jspan s, const char *literal);   /* the span's bytes are `literal` */
bool jnumber(jspan value, double *out);         /* a JSON number */
bool jstring(jspan value, char *out, size_t cap); /* a string without escapes, NUL-terminated */

#endif
