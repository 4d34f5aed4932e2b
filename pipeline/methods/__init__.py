"""Distillation methods, one file each; importing this package registers them all."""
from pipeline.methods import ccd, crd, dkd, icd, kd, none, slkd  # noqa: F401  (registration)
from pipeline.methods.base import (METHODS, Method, MethodContext, NetOutput, Outputs, TeacherNeeds, build_methods,
                                   parse_method, teacher_needs)

__all__ = ["METHODS", "Method", "MethodContext", "NetOutput", "Outputs", "TeacherNeeds", "build_methods",
           "parse_method", "teacher_needs"]
