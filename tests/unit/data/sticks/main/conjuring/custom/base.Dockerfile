FROM ubuntu:18.04 as base
LABEL maintainer="Course Team <course-team@example.edu>"
ENV DEBIAN_FRONTEND noninteractive
ENV LANG C.UTF-8
