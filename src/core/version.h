#ifndef MOAT_CORE_VERSION_H
#define MOAT_CORE_VERSION_H
#define MOAT_VERSION "0.1.0"
#endif
