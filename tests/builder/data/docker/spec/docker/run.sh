#!/bin/sh
echo "$GREETING"
cat /opt/hello/build-info
