/* Scoring a greedy continuation against the expected answer.
 *
 * The rule of tools/train_tiny.py's evaluate() for numbers: the continuation
 * must *start* (after white space) with the expected number, digit for digit:
 * "71932." and " 71932" are right, "7193", "719320" and "abc 71932" wrong.
 * Lists (numbers in text order, VT's names in chain order) must start with the
 * expected items in order; word sets (CWE, FWE) must name the expected words
 * among their first items, in any order. */
#ifndef LTRI_EVAL_SCORE_H
#define LTRI_EVAL_SCORE_H

#include <stddef.h>

#include "eval/tasks.h"

/* Returns 1 when continuation answers expected, else 0; writes the answer as
 * read from the continuation (the leading number, list or words, "" when there
 * is none) into got. */
int eval_score(eval_answer_kind kind, const char *expected, const char *continuation, char *got, size_t got_len);

#endif
