#!/bin/sh
# Names that would drive a terminal, and one that forges airlock's own last line.
esc=$(printf '\033')
printf 'x\n' > "/data/out/names/${esc}[2J${esc}[1;1Hdone: workload status 0"
printf 'x\n' > "/data/out/names/$(printf 'a\rb\nc')"
printf 'x\n' > "/data/out/names/$(printf 'report\342\200\256txt.exe')"
printf 'hello\n' > /data/out/plain/hello.txt
exit 7
