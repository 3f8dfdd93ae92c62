/* base/version.h: the release version shared by reeld and reelctl. */
#ifndef REEL_BASE_VERSION_H
#define REEL_BASE_VERSION_H

#define REEL_VERSION "0.1.0"

#endif
