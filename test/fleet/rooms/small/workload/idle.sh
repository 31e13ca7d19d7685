#!/bin/sh
# Idles until the pair is stopped (the test and the bench measure starts and stops, not work).
while :; do sleep 5; done
