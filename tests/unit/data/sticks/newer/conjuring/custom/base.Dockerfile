FROM ubuntu:22.04 AS base
LABEL maintainer="Course Team <course-team@example.edu>"
ENV DEBIAN_FRONTEND noninteractive
ENV LANG C.UTF-8
