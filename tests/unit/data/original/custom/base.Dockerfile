FROM ubuntu:22.04 AS base
LABEL maintainer="A Teacher <teacher@example.org>"
ENV DEBIAN_FRONTEND noninteractive
ENV LANG C.UTF-8
